// Thin C shim over oneDNN's matmul primitive (C API, oneDNN 2.x and 3.x) for avflow's CPU linear layers:
// C[b] (f32) = A[b] · W[b]ᵀ over a batch, operands bf16 or f32, row-major and contiguous.
// Built by build.rs only where the oneDNN headers exist; oneDNN's own primitive cache makes repeated
// shapes cheap. Returns 0 on success, a dnnl_status_t otherwise.
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

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
#define MD_PTR(x) (x)
#define MD_FREE(x) dnnl_memory_desc_destroy(x)
static int md3(dnnl_memory_desc_t *md, const dnnl_dims_t dims, dnnl_data_type_t dt, const dnnl_dims_t strides) {
    return (int)dnnl_memory_desc_create_with_strides(md, 3, dims, dt, strides);
}
#else
#define MD_PTR(x) (&(x))
#define MD_FREE(x) (void)0
static int md3(dnnl_memory_desc_t *md, const dnnl_dims_t dims, dnnl_data_type_t dt, const dnnl_dims_t strides) {
    return (int)dnnl_memory_desc_init_by_strides(md, 3, dims, dt, strides);
}
#endif

// Batched: for b < B, C[b] (M×N, f32) = A[b] (M×K) · W[b]ᵀ (W[b] is N×K), all row-major and contiguous.
// bf16 != 0: A and W are bf16; otherwise f32.
int avflow_onednn_bmm(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, const void *A, const void *W,
                      float *C) {
    int rc = ensure_engine();
    if (rc) return rc;
    dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t a_md, w_md, c_md;
    dnnl_dims_t a_dims = {B, M, K}, a_str = {M * K, K, 1};
    // W[b] is N×K row-major = a K×N matrix with strides (1, K).
    dnnl_dims_t w_dims = {B, K, N}, w_str = {N * K, 1, K};
    dnnl_dims_t c_dims = {B, M, N}, c_str = {M * N, N, 1};
    if ((rc = md3(&a_md, a_dims, dt, a_str))) return rc;
    if ((rc = md3(&w_md, w_dims, dt, w_str))) return rc;
    if ((rc = md3(&c_md, c_dims, dnnl_f32, c_str))) return rc;
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

// "MAJOR.MINOR.PATCH" of the oneDNN loaded at run time (benchmark reports).
const char *avflow_onednn_version(void) {
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}
