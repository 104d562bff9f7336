// Thin C shim over oneDNN's matmul primitive (C API, oneDNN 2.x and 3.x) for avflow's CPU linear layers:
// C[M, N] (f32, leading dimension ldc) = A[M, K] (bf16 or f32, row-major) · W[N, K]ᵀ (bf16 or f32).
// Built by build.rs only where the oneDNN headers exist; oneDNN's own primitive cache makes repeated
// shapes cheap. Returns 0 on success, a dnnl_status_t otherwise.
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stddef.h>

static dnnl_engine_t g_engine = NULL;
static dnnl_stream_t g_stream = NULL;

static int ensure_engine(void) {
    if (g_engine) return 0;
    dnnl_status_t s = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
    if (s != dnnl_success) return (int)s;
    s = dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags);
    return (int)s;
}

#if DNNL_VERSION_MAJOR >= 3
#define MD_T dnnl_memory_desc_t
#define MD_PTR(x) (x)
static int md_strides(MD_T *md, int64_t d0, int64_t d1, dnnl_data_type_t dt, int64_t s0, int64_t s1) {
    dnnl_dims_t dims = {d0, d1};
    dnnl_dims_t strides = {s0, s1};
    return (int)dnnl_memory_desc_create_with_strides(md, 2, dims, dt, strides);
}
#define MD_FREE(x) dnnl_memory_desc_destroy(x)
#else
#define MD_T dnnl_memory_desc_t
#define MD_PTR(x) (&(x))
static int md_strides(MD_T *md, int64_t d0, int64_t d1, dnnl_data_type_t dt, int64_t s0, int64_t s1) {
    dnnl_dims_t dims = {d0, d1};
    dnnl_dims_t strides = {s0, s1};
    return (int)dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}
#define MD_FREE(x) (void)0
#endif

int avflow_onednn_matmul(int64_t M, int64_t N, int64_t K, int bf16, const void *A, const void *W, float *C,
                         int64_t ldc) {
    int rc = ensure_engine();
    if (rc) return rc;
    dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    MD_T a_md, w_md, c_md;
    if ((rc = md_strides(&a_md, M, K, dt, K, 1))) return rc;
    // W is [N, K] row-major = a [K, N] matrix with strides (1, K).
    if ((rc = md_strides(&w_md, K, N, dt, 1, K))) return rc;
    if ((rc = md_strides(&c_md, M, N, dnnl_f32, ldc, 1))) return rc;
    dnnl_primitive_desc_t pd = NULL;
#if DNNL_VERSION_MAJOR >= 3
    rc = (int)dnnl_matmul_primitive_desc_create(&pd, g_engine, a_md, w_md, NULL, c_md, NULL);
#else
    dnnl_matmul_desc_t desc;
    rc = (int)dnnl_matmul_desc_init(&desc, &a_md, &w_md, NULL, &c_md);
    if (!rc) rc = (int)dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, NULL);
#endif
    if (rc) goto out_md;
    dnnl_primitive_t prim = NULL;
    if ((rc = (int)dnnl_primitive_create(&prim, pd))) goto out_pd;
    dnnl_memory_t am = NULL, wm = NULL, cm = NULL;
    if ((rc = (int)dnnl_memory_create(&am, MD_PTR(a_md), g_engine, (void *)A))) goto out_prim;
    if ((rc = (int)dnnl_memory_create(&wm, MD_PTR(w_md), g_engine, (void *)W))) goto out_am;
    if ((rc = (int)dnnl_memory_create(&cm, MD_PTR(c_md), g_engine, (void *)C))) goto out_wm;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}};
    rc = (int)dnnl_primitive_execute(prim, g_stream, 3, args);
    if (!rc) rc = (int)dnnl_stream_wait(g_stream);
    dnnl_memory_destroy(cm);
out_wm:
    dnnl_memory_destroy(wm);
out_am:
    dnnl_memory_destroy(am);
out_prim:
    dnnl_primitive_destroy(prim);
out_pd:
    dnnl_primitive_desc_destroy(pd);
out_md:
    MD_FREE(a_md);
    MD_FREE(w_md);
    MD_FREE(c_md);
    return rc;
}
