// Thin C shim over oneDNN's matmul primitive (C API, oneDNN 2.x and 3.x) for avflow's CPU linear layers:
// C[b] (f32) = A[b] · W[b]ᵀ (+ bias) over a batch, operands bf16 or f32, row-major and contiguous.
// Built by build.rs only where the oneDNN headers exist. Returns 0 on success, a dnnl_status_t otherwise.
//
// Why the cache and the user scratchpad: oneDNN's AMX matmul repacks W into a scratchpad on every call
// (tens of MB for the MLP). With the library-managed scratchpad and a primitive made and destroyed per
// call, that buffer was allocated, faulted in, zeroed by the kernel and freed on every product; one
// forward spent more time in the kernel's page zeroing than in some layers. Here primitives live in a
// small cache and all of them share one persistent scratchpad that only grows.
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static dnnl_engine_t g_engine = NULL;
static dnnl_stream_t g_stream = NULL;
// One lock for the engine, the cache and the scratchpad: products run one at a time (each already uses
// every oneDNN thread), and callers on other threads (the test harness) stay safe.
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static void *g_scratch = NULL;
static size_t g_scratch_size = 0;

typedef struct {
    int64_t b, m, n, k;
    int bf16, bias;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a_md, w_md, c_md, s_md, b_md;
    size_t scratch;
} entry_t;

#define CACHE_N 256
static entry_t g_cache[CACHE_N];
static int g_cache_len = 0, g_cache_next = 0;

#if DNNL_VERSION_MAJOR >= 3
#define MD_PTR(x) (x)
#define MD_FREE(x) dnnl_memory_desc_destroy(x)
static int mdn(dnnl_memory_desc_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt, const dnnl_dims_t strides) {
    return (int)dnnl_memory_desc_create_with_strides(md, nd, dims, dt, strides);
}
static int md_clone(dnnl_memory_desc_t *dst, const_dnnl_memory_desc_t src) {
    return (int)dnnl_memory_desc_clone(dst, src);
}
#else
#define MD_PTR(x) (&(x))
#define MD_FREE(x) (void)0
static int mdn(dnnl_memory_desc_t *md, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt, const dnnl_dims_t strides) {
    return (int)dnnl_memory_desc_init_by_strides(md, nd, dims, dt, strides);
}
static int md_clone(dnnl_memory_desc_t *dst, const dnnl_memory_desc_t *src) {
    *dst = *src;
    return 0;
}
#endif

static int ensure_engine(void) {
    if (g_engine) return 0;
    dnnl_status_t s = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
    if (s != dnnl_success) return (int)s;
    return (int)dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags);
}

static void entry_free(entry_t *e) {
    dnnl_primitive_destroy(e->prim);
    MD_FREE(e->a_md);
    MD_FREE(e->w_md);
    MD_FREE(e->c_md);
    MD_FREE(e->s_md);
    if (e->bias) MD_FREE(e->b_md);
    e->prim = NULL;
}

// Makes the primitive for one shape: 2-D descriptors when B == 1 (the layout transformers hands
// oneDNN), 3-D otherwise; an f32 bias [N] only with B == 1; scratchpad owned by the caller. On failure
// no primitive is left behind.
static int entry_make(entry_t *e, int64_t B, int64_t M, int64_t N, int64_t K, int bf16, int bias) {
    int rc;
    dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    e->b = B; e->m = M; e->n = N; e->k = K; e->bf16 = bf16; e->bias = bias; e->prim = NULL;
    if (bias && B != 1) return (int)dnnl_invalid_arguments;
    if (bias) {
        dnnl_dims_t b_dims = {1, N}, b_str = {N, 1};
        if ((rc = mdn(&e->b_md, 2, b_dims, dnnl_f32, b_str))) return rc;
    }
    if (B == 1) {
        dnnl_dims_t a_dims = {M, K}, a_str = {K, 1};
        // W is N×K row-major = a K×N matrix with strides (1, K).
        dnnl_dims_t w_dims = {K, N}, w_str = {1, K};
        dnnl_dims_t c_dims = {M, N}, c_str = {N, 1};
        if ((rc = mdn(&e->a_md, 2, a_dims, dt, a_str))) return rc;
        if ((rc = mdn(&e->w_md, 2, w_dims, dt, w_str))) return rc;
        if ((rc = mdn(&e->c_md, 2, c_dims, dnnl_f32, c_str))) return rc;
    } else {
        dnnl_dims_t a_dims = {B, M, K}, a_str = {M * K, K, 1};
        dnnl_dims_t w_dims = {B, K, N}, w_str = {N * K, 1, K};
        dnnl_dims_t c_dims = {B, M, N}, c_str = {M * N, N, 1};
        if ((rc = mdn(&e->a_md, 3, a_dims, dt, a_str))) return rc;
        if ((rc = mdn(&e->w_md, 3, w_dims, dt, w_str))) return rc;
        if ((rc = mdn(&e->c_md, 3, c_dims, dnnl_f32, c_str))) return rc;
    }
    dnnl_primitive_attr_t attr = NULL;
    if ((rc = (int)dnnl_primitive_attr_create(&attr))) return rc;
    rc = (int)dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_primitive_desc_t pd = NULL;
    if (!rc) {
#if DNNL_VERSION_MAJOR >= 3
        rc = (int)dnnl_matmul_primitive_desc_create(&pd, g_engine, e->a_md, e->w_md, bias ? e->b_md : NULL,
                                                    e->c_md, attr);
#else
        dnnl_matmul_desc_t desc;
        rc = (int)dnnl_matmul_desc_init(&desc, &e->a_md, &e->w_md, bias ? &e->b_md : NULL, &e->c_md);
        if (!rc) rc = (int)dnnl_primitive_desc_create(&pd, &desc, attr, g_engine, NULL);
#endif
    }
    dnnl_primitive_attr_destroy(attr);
    if (rc) return rc;
    rc = md_clone(&e->s_md, dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    if (!rc) {
        e->scratch = dnnl_memory_desc_get_size(MD_PTR(e->s_md));
        rc = (int)dnnl_primitive_create(&e->prim, pd);
    }
    dnnl_primitive_desc_destroy(pd);
    if (rc && e->prim) {
        dnnl_primitive_destroy(e->prim);
        e->prim = NULL;
    }
    return rc;
}

static entry_t *find(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, int bias) {
    for (int i = 0; i < g_cache_len; i++) {
        entry_t *e = &g_cache[i];
        if (e->b == B && e->m == M && e->n == N && e->k == K && e->bf16 == bf16 && e->bias == bias) return e;
    }
    return NULL;
}

// Takes `fresh` into the cache (replacing the oldest entry when full); called with the lock held.
static entry_t *insert(const entry_t *fresh) {
    int slot;
    if (g_cache_len < CACHE_N) {
        slot = g_cache_len++;
    } else {
        slot = g_cache_next;
        g_cache_next = (g_cache_next + 1) % CACHE_N;
        entry_free(&g_cache[slot]);
    }
    g_cache[slot] = *fresh;
    return &g_cache[slot];
}

static entry_t *lookup(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, int bias, int *rc) {
    entry_t *e = find(B, M, N, K, bf16, bias);
    if (e) return e;
    entry_t fresh;
    if ((*rc = entry_make(&fresh, B, M, N, K, bf16, bias))) return NULL;
    return insert(&fresh);
}

static int ensure_scratch(size_t size) {
    if (size <= g_scratch_size) return 0;
    void *p = NULL;
    if (posix_memalign(&p, 4096, size)) return (int)dnnl_out_of_memory;
    free(g_scratch);
    g_scratch = p;
    g_scratch_size = size;
    return 0;
}

static int run_locked(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, const void *A, const void *W,
                      const float *bias, float *C) {
    int rc = ensure_engine();
    if (rc) return rc;
    entry_t *e = lookup(B, M, N, K, bf16, bias != NULL, &rc);
    if (!e) return rc;
    if ((rc = ensure_scratch(e->scratch))) return rc;
    dnnl_memory_t am = NULL, wm = NULL, cm = NULL, sm = NULL, bm = NULL;
    if ((rc = (int)dnnl_memory_create(&am, MD_PTR(e->a_md), g_engine, (void *)A))) return rc;
    if ((rc = (int)dnnl_memory_create(&wm, MD_PTR(e->w_md), g_engine, (void *)W))) goto out_am;
    if ((rc = (int)dnnl_memory_create(&cm, MD_PTR(e->c_md), g_engine, (void *)C))) goto out_wm;
    if ((rc = (int)dnnl_memory_create(&sm, MD_PTR(e->s_md), g_engine, g_scratch))) goto out_cm;
    if (bias && (rc = (int)dnnl_memory_create(&bm, MD_PTR(e->b_md), g_engine, (void *)bias))) goto out_sm;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, am},        {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm},
                               {DNNL_ARG_SCRATCHPAD, sm}, {DNNL_ARG_BIAS, bm}};
    rc = (int)dnnl_primitive_execute(e->prim, g_stream, bias ? 5 : 4, args);
    if (!rc) rc = (int)dnnl_stream_wait(g_stream);
    if (bm) dnnl_memory_destroy(bm);
out_sm:
    dnnl_memory_destroy(sm);
out_cm:
    dnnl_memory_destroy(cm);
out_wm:
    dnnl_memory_destroy(wm);
out_am:
    dnnl_memory_destroy(am);
    return rc;
}

// Batched: for b < B, C[b] (M×N, f32) = A[b] (M×K) · W[b]ᵀ (W[b] is N×K), all row-major and contiguous.
// bf16 != 0: A and W are bf16; otherwise f32. bias: NULL or N f32 values added to every row (B == 1 only).
int avflow_onednn_bmm(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, const void *A, const void *W,
                      const float *bias, float *C) {
    pthread_mutex_lock(&g_lock);
    int rc = run_locked(B, M, N, K, bf16, A, W, bias, C);
    pthread_mutex_unlock(&g_lock);
    return rc;
}

// Makes (JIT-compiles) the primitive for one shape ahead of its product, outside the lock, so that several
// threads can compile the shapes of the next layer call at once: compiling is single-threaded and costs
// 2-18 ms a shape, and a batched knockout stacks a different number of rows at every layer. Same
// arguments as avflow_onednn_bmm; 0 when the shape is cached afterwards.
int avflow_onednn_prepare(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, int bias) {
    pthread_mutex_lock(&g_lock);
    int rc = ensure_engine();
    int cached = !rc && find(B, M, N, K, bf16, bias) != NULL;
    pthread_mutex_unlock(&g_lock);
    if (rc || cached) return rc;
    entry_t fresh;
    if ((rc = entry_make(&fresh, B, M, N, K, bf16, bias))) return rc;
    pthread_mutex_lock(&g_lock);
    if (find(B, M, N, K, bf16, bias)) {
        entry_free(&fresh);
    } else {
        insert(&fresh);
    }
    pthread_mutex_unlock(&g_lock);
    return 0;
}

// 1 when the primitive for this shape is cached (tests of avflow_onednn_prepare).
int avflow_onednn_cached(int64_t B, int64_t M, int64_t N, int64_t K, int bf16, int bias) {
    pthread_mutex_lock(&g_lock);
    int hit = find(B, M, N, K, bf16, bias) != NULL;
    pthread_mutex_unlock(&g_lock);
    return hit;
}

// "MAJOR.MINOR.PATCH" of the oneDNN loaded at run time (benchmark reports).
const char *avflow_onednn_version(void) {
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}
