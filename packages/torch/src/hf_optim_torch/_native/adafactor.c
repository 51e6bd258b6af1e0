/* Adafactor's update for a list of CPU tensors, in two passes over memory: factored matrices and unfactored tensors.
 *
 * Compiled at first use by hf_optim_torch/_native/__init__.py (C99 with GNU C's vector extension, which gcc and
 * clang take, + OpenMP; no torch headers) and called through ctypes. The formulas are those of
 * spec/optimizers/adafactor.json for a 2-D parameter (R: row statistics,
 * C: column statistics, both updated in place). The kernel does the tensor arithmetic only: every scalar of a step
 * (beta2t, the lr, the clipping divisor and the coefficients made of them) is computed by the caller, in Python, by
 * the functions every Adafactor path shares (hf_optim_torch/_adafactor_scalars.py). So a step is two calls:
 *
 *   hf_adafactor_statistics (pass 1, given b = beta2t of each matrix):
 *     u = g^2 + eps1;  R = b R + (1-b) mean_j u;  C = b C + (1-b) mean_i u
 *     returns per matrix mean(R), RMS(p) (also written to the rms buffer) and sum_ij (r_i c_j g_ij)^2
 *   hf_adafactor_apply (pass 2, given per matrix mean(R), coef, decay and m_scale):
 *     update = g * coef * rsqrt(R_i / mean(R)) * rsqrt(C_j)
 *     p = p - decay p (when weight decay is on);  m = beta1 m + (1-beta1) update;  p = p - m_scale m
 *     (without a first moment: p = p - update)
 *
 * Pass 1 reads g and p once: for each row, sum_j g^2 gives the new R_i (final once the row is read), and the row's
 * g^2 is added into per-thread column sums of g^2 and of g^2 / R_i, so that the squared norm of the update needs no
 * second read of g:  sum_ij (r_i c_j g_ij)^2 = mean(R) * sum_j (sum_i g_ij^2 / R_i) / C_j.  Pass 2 reads g, p (and m)
 * and writes p (and m). Sums are accumulated in double (column sums in float over FLOAT_ROWS rows at a time, row
 * sums in float lanes over FLOAT_CHUNK elements, then in double); each element's arithmetic is float32, as on the
 * torch path.
 *
 * The RMS of p enters the step's lr only with scale_parameter. Without it both calls take rms_in_apply = 1: pass 1
 * does not read p (its stats hand back NaN for RMS(p)), and pass 2 sums the squares of each row of p before it
 * updates it, then writes the RMS of p as it was before the step into the rms buffer, as pass 1 would have: the step
 * reads p once instead of twice (16 B/param instead of 20).
 *
 * The result does not depend on the number of threads: every matrix is cut into row spans (SPANS, fewer for a
 * matrix of under SPANS * FLOAT_ROWS rows; see row_spans) and SPANS column spans between the passes, whatever the
 * thread count, each span has its own partial sums, and the partial sums are
 * added in span order. Pass 1 processes matrices in groups whose partial sums fit in GROUP_BYTES. The threads are
 * OpenMP's, the team torch itself uses (see run_threads).
 *
 * Parameters and gradients may be float32, bfloat16 or float16 (see TYPE_*), each tensor its own; the statistics and
 * first moments are float32. A 16-bit value is read into float32 and the arithmetic is float32, as for float32
 * tensors; a 16-bit parameter is stored back rounded to nearest (ties to even), as torch's copy_ from float32 stores
 * it. Chunks of CONVERT_CHUNK elements go through buffers on the stack (pass 1 of a matrix converts a row of its
 * gradient into the work memory it already has), and float32 tensors are read in place.
 *
 * Nothing a caller hands over is trusted: with the pointers come the element counts of every buffer, and before it
 * reads or writes any data each call checks every matrix's shape and every buffer's count and pointer against each
 * other (see check and the HF_E_* codes). A call that fails a check returns a negative code, the index of the
 * matrix at fault, and changes nothing; so does a statistics call whose work memory cannot be allocated (the apply
 * calls allocate nothing: their work buffers come from the caller, with their sizes, so that a step refused for lack
 * of memory is refused before its first write).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __F16C__
#include <immintrin.h>        /* the x86 float16 conversion instructions (F16C), eight elements at a time */
#endif

#define SPANS 12                  /* divisible by 1, 2, 3, 4 and 6 threads; more threads than SPANS are not used */
#define FLOAT_ROWS 32             /* rows whose column sums are accumulated in float, then added in double */
#define ROW_GROUP 4               /* rows of pass 1 whose column contributions are added to the sums together */
#define FLOAT_CHUNK 256           /* elements of a row (or span) whose sums of squares are added in float first */
#define GROUP_BYTES (8 << 20)     /* partial column sums of one group of matrices */
#define CONVERT_CHUNK 256         /* elements of a 16-bit parameter converted to float32 at a time */
#define UPDATE_CHUNK 4096         /* elements of a float32 row (or span) updated at a time in pass 2 (a multiple of
                                     FLOAT_CHUNK: summed before its update with rms_in_apply, it is still in cache) */

/* the element types of a parameter or gradient (types[] of a call) */
enum { TYPE_F32, TYPE_BF16, TYPE_F16, TYPES };
static const int64_t type_size[TYPES] = {4, 2, 2};

/* the element types this build takes, one bit per TYPE_* */
int hf_adafactor_types(void) { return (1 << TYPE_F32) | (1 << TYPE_BF16) | (1 << TYPE_F16); }

/* the spans each tensor is cut into: an apply call with rms_in_apply takes a sums buffer of 2 * SPANS * count doubles */
int hf_adafactor_spans(void) { return SPANS; }

static inline uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The 16-bit conversions, in integer operations and exact float ones that vectorize (a compiler's _Float16 may have
 * no vector type): branch-free, choices by mask (pick), and no float32 subnormal formed (so flush-to-zero modes do
 * not change them). */
static inline uint32_t pick(int condition, uint32_t yes, uint32_t no) { return no ^ ((yes ^ no) & -(uint32_t)condition); }

static inline float bf16_to_float(uint16_t h) { return float_of((uint32_t)h << 16); }

/* to nearest, ties to even; NaN as torch's canonical bfloat16 NaN */
static inline uint16_t float_to_bf16(float f) {
    uint32_t u = bits_of(f);
    return (uint16_t)pick(f != f, 0x7FC0u, (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7FFFu;
    uint32_t normal = (em << 13) + ((uint32_t)(127 - 15) << 23);  /* the exponent rebiased, the significand shifted */
    uint32_t special = (em << 13) | 0x7F800000u;                  /* infinity or NaN (its payload kept) */
    uint32_t subnormal = bits_of((float)(int32_t)em * 0x1p-24f);   /* em * 2^-24, exact; 0 for em = 0 */
    return float_of(sign | pick(em >= 0x7C00u, special, pick(em >= 0x0400u, normal, subnormal)));
}

/* to nearest, ties to even (overflow to infinity); NaN as a quiet NaN of its sign */
static inline uint16_t float_to_f16(float f) {
    uint32_t u = bits_of(f), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    uint32_t t = a - ((uint32_t)(127 - 15) << 23);                 /* normal: rebiased, rounded at bit 13 */
    uint32_t normal = (t + 0x0FFFu + ((t >> 13) & 1u)) >> 13;       /* (a carry into the exponent is right) */
    /* below 2^-14: |f| * 2^24 rounded to an integer by the addition of 2^23 (the float unit's ties to even) */
    uint32_t subnormal = bits_of(float_of(a) * 0x1p24f + 0x1p23f) - 0x4B000000u;
    uint32_t finite = pick(a >= 0x47800000u, 0x7C00u, pick(a >= 0x38800000u, normal, subnormal));
    return (uint16_t)(sign | pick(a > 0x7F800000u, 0x7E00u, finite));
}

/* elements [at, at + len) of a tensor of this type as float32: the tensor itself for float32, else a copy in buf */
static inline float *as_floats(void *p, int type, int64_t at, int64_t len, float *buf) {
    if (type == TYPE_F32) return (float *)p + at;
    const uint16_t *h = (const uint16_t *)p + at;
    if (type == TYPE_BF16) {
#pragma omp simd
        for (int64_t j = 0; j < len; j++) buf[j] = bf16_to_float(h[j]);
    } else {
        int64_t j = 0;
#ifdef __F16C__
        for (; j + 8 <= len; j += 8) _mm256_storeu_ps(buf + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j))));
#endif
#pragma omp simd
        for (int64_t i = j; i < len; i++) buf[i] = f16_to_float(h[i]);
    }
    return buf;
}

/* the float32 values of as_floats stored back into a 16-bit parameter, rounded to nearest, ties to even; nothing
 * for float32, whose values were updated in place */
static inline void store_param(void *p, int type, int64_t at, int64_t len, const float *buf) {
    uint16_t *h = (uint16_t *)p + at;
    if (type == TYPE_BF16) {
#pragma omp simd
        for (int64_t j = 0; j < len; j++) h[j] = float_to_bf16(buf[j]);
    } else if (type == TYPE_F16) {
        int64_t j = 0;
#ifdef __F16C__
        for (; j + 8 <= len; j += 8)
            _mm_storeu_si128((__m128i *)(h + j), _mm256_cvtps_ph(_mm256_loadu_ps(buf + j), _MM_FROUND_TO_NEAREST_INT));
#endif
#pragma omp simd
        for (int64_t i = j; i < len; i++) h[i] = float_to_f16(buf[i]);
    }
}

typedef struct {
    int64_t count;                /* matrices of this job (pass 1: of this group) */
    void **g, **p;                /* of the element types gtypes[k], ptypes[k] */
    float **m;                    /* NULL, or one pointer per matrix */
    float **row, **col, **rms;    /* rms: one float per matrix, written by pass 1 (by pass 2 with rms_in_apply) */
    const int64_t *rows, *cols;
    const int32_t *gtypes, *ptypes;
    const double *beta2t;         /* pass 1, per matrix: beta2t of its step */
    double eps1;
    double *stats;                /* pass 1, per matrix: [3 * k]: mean(R), RMS(p) as stored, squared norm of update */
    const double *scalars;        /* pass 2, per matrix: [4 * k]: mean(R), coef, decay, m_scale */
    double beta1;
    int decay, threads;           /* decay: whether weight decay is on */
    int rms_in_apply;             /* whether pass 2, not pass 1, sums p^2 (see the top of this file) */
    /* work */
    int64_t *col_offset;          /* pass 1, [count + 1]: start of matrix k's columns in the flat column arrays */
    int64_t widest;               /* most columns of a matrix in the group */
    double *col_sums, *weighted;  /* [SPANS][group columns]: partial sums of g^2 and g^2 / R_i per row span */
    float *float_sums;            /* [threads][2 + ROW_GROUP][widest]: column sums in float, rows of g as float */
    double *sq_p, *norm;          /* [SPANS][count]: partial sums of p^2 (row spans), of (g^2/R)/C (column spans);
                                     pass 2 with rms_in_apply: its row spans' sums of p^2 */
    float *col_rsqrt;             /* pass 2, [all columns]: rsqrt of the new C (the caller's work buffer) */
} job_t;

typedef struct {
    void *job;                    /* a job_t (factored matrices) or a flat_job_t (unfactored tensors) */
    int index;
} worker_t;

static void span(int64_t n, int index, int64_t *lo, int64_t *hi) {
    *lo = n * index / SPANS;
    *hi = n * (index + 1) / SPANS;
}

/* the row spans of pass 1 for a matrix of this many rows: SPANS, or fewer for a small matrix (each span at least
 * FLOAT_ROWS rows), so that a small matrix does not pay for SPANS sets of partial column sums. A function of the
 * shape only: the result still does not depend on the number of threads. */
static int row_spans(int64_t rows) {
    int64_t spans = rows / FLOAT_ROWS;
    return spans < 1 ? 1 : spans > SPANS ? SPANS : (int)spans;
}

static void row_span(int64_t rows, int index, int64_t *lo, int64_t *hi) {
    int64_t spans = row_spans(rows);
    *lo = rows * index / spans;
    *hi = rows * (index + 1) / spans;
}

/* Eight floats as one value of GNU C's vector extension (gcc, clang): arithmetic on it is lane by lane, so a sum kept
 * in two of them has sixteen independent partial sums, where one float (or OpenMP's simd reduction, which compilers
 * may keep in memory) waits on the previous addition at every element. Which elements each lane adds is fixed by the
 * code (element j of a chunk goes to lane j % 16), so the result does not depend on the compiler's vector width. */
#define LANES 8
typedef float lanes_t __attribute__((vector_size(LANES * sizeof(float))));

static inline lanes_t load_lanes(const float *x) {
    lanes_t v;
    memcpy(&v, x, sizeof v);  /* an unaligned load */
    return v;
}

/* the lanes' sum, in a fixed order of pairs */
static inline float lane_sum(lanes_t v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }

/* sum_j x_j^2 of a chunk of at most FLOAT_CHUNK floats, in float: two vectors of LANES partial sums, then the lanes
 * in a fixed order, then the chunk's last elements (fewer than 2 * LANES) one by one. Unless y is NULL, the same sum
 * of y's chunk goes to *sum_y, in the same loop (two streams read together run faster than one after the other);
 * a NULL y is a constant where it is, so the compiler drops its branches. */
static inline float chunk_squares(const float *x, const float *y, int64_t len, float *sum_y) {
    lanes_t s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
    int64_t j = 0;
    for (; j + 2 * LANES <= len; j += 2 * LANES) {
        lanes_t a = load_lanes(x + j), b = load_lanes(x + j + LANES);
        s0 += a * a;
        s1 += b * b;
        if (y != NULL) {
            lanes_t c = load_lanes(y + j), d = load_lanes(y + j + LANES);
            q0 += c * c;
            q1 += d * d;
        }
    }
    float s = lane_sum(s0 + s1), q = lane_sum(q0 + q1);
    for (; j < len; j++) {
        s += x[j] * x[j];
        if (y != NULL) q += y[j] * y[j];
    }
    if (y != NULL) *sum_y = q;
    return s;
}

/* sum of the squares of elements [at, at + len) of a tensor of this type: chunk_squares of each FLOAT_CHUNK, added
 * in double (the same sum for any split of the range at multiples of FLOAT_CHUNK, as each chunk's sum is added to
 * the running total) */
static double squares(void *x, int type, int64_t at, int64_t len, double total) {
    for (int64_t j0 = 0; j0 < len; j0 += FLOAT_CHUNK) {
        int64_t n = len - j0 < FLOAT_CHUNK ? len - j0 : FLOAT_CHUNK;
        float buf[FLOAT_CHUNK];
        total += chunk_squares(as_floats(x, type, at + j0, n, buf), NULL, n, NULL);
    }
    return total;
}

/* the RMS of a tensor of numel elements from its spans' partial sums of squares, sums[v * stride] for span v < spans,
 * added in span order (so that it does not depend on which thread summed which span) */
static float span_rms(const double *sums, int spans, int64_t stride, double numel) {
    double sum = 0.0;
    for (int v = 0; v < spans; v++) sum += sums[v * stride];
    return (float)sqrt(sum / numel);
}

/* row i of matrix k in pass 1: its new R_i (stored) and, added to *sq_p, its sum of p^2 (none with rms_in_apply); g
 * is the row as float. Sums of squares in float lanes over FLOAT_CHUNK elements, then in double. */
static float row_statistic(job_t *job, int64_t k, int64_t i, const float *g, double *sq_p) {
    int64_t n = job->cols[k];
    double s = 0.0, q = 0.0, b = job->beta2t[k], decay = 1.0 - b;
    for (int64_t j0 = 0; j0 < n; j0 += FLOAT_CHUNK) {
        int64_t len = n - j0 < FLOAT_CHUNK ? n - j0 : FLOAT_CHUNK;
        float buf[FLOAT_CHUNK], qf = 0.0f;
        if (job->rms_in_apply) {
            s += chunk_squares(g + j0, NULL, len, NULL);
        } else {
            s += chunk_squares(g + j0, as_floats(job->p[k], job->ptypes[k], i * n + j0, len, buf), len, &qf);
            q += qf;
        }
    }
    *sq_p += q;
    float r = (float)(b * job->row[k][i] + decay * (s / (double)n) + decay * job->eps1);
    job->row[k][i] = r;
    return r;
}

/* pass 1: row statistics, and per row span the column sums and the sum of p^2. The rows' g^2 and g^2 / R_i are
 * added into the float column sums ROW_GROUP rows at a time (one load and store of the sums per group, not per
 * row: the stores bound this loop), the rows of a FLOAT_ROWS block that do not fill a group one by one. */
static void *pass1(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = (job_t *)w->job;
    int64_t total_cols = job->col_offset[job->count];
    float *cf = job->float_sums + (int64_t)w->index * (2 + ROW_GROUP) * job->widest, *wf = cf + job->widest;
    float *gf[ROW_GROUP];  /* a row of g as float per row of a group (16-bit gradients; float32 ones are read as is) */
    for (int u = 0; u < ROW_GROUP; u++) gf[u] = wf + (1 + u) * job->widest;
    for (int v = w->index; v < SPANS; v += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t n = job->cols[k], lo, hi;
            if (v >= row_spans(job->rows[k])) continue;
            row_span(job->rows[k], v, &lo, &hi);
            double sq_p = 0.0;
            double *cs = job->col_sums + v * total_cols + job->col_offset[k];
            double *ws = job->weighted + v * total_cols + job->col_offset[k];
            for (int64_t j = 0; j < n; j++) cs[j] = ws[j] = 0.0;
            for (int64_t i0 = lo; i0 < hi; i0 += FLOAT_ROWS) {
                int64_t i1 = i0 + FLOAT_ROWS < hi ? i0 + FLOAT_ROWS : hi;
                for (int64_t j = 0; j < n; j++) cf[j] = wf[j] = 0.0f;
                int64_t i = i0;
                for (; i + ROW_GROUP <= i1; i += ROW_GROUP) {
                    const float *g0 = as_floats(job->g[k], job->gtypes[k], i * n, n, gf[0]);
                    const float *g1 = as_floats(job->g[k], job->gtypes[k], (i + 1) * n, n, gf[1]);
                    const float *g2 = as_floats(job->g[k], job->gtypes[k], (i + 2) * n, n, gf[2]);
                    const float *g3 = as_floats(job->g[k], job->gtypes[k], (i + 3) * n, n, gf[3]);
                    float inv0 = 1.0f / row_statistic(job, k, i, g0, &sq_p);
                    float inv1 = 1.0f / row_statistic(job, k, i + 1, g1, &sq_p);
                    float inv2 = 1.0f / row_statistic(job, k, i + 2, g2, &sq_p);
                    float inv3 = 1.0f / row_statistic(job, k, i + 3, g3, &sq_p);
#pragma omp simd
                    for (int64_t j = 0; j < n; j++) {
                        float a0 = g0[j] * g0[j], a1 = g1[j] * g1[j], a2 = g2[j] * g2[j], a3 = g3[j] * g3[j];
                        cf[j] += (a0 + a1) + (a2 + a3);
                        wf[j] += (a0 * inv0 + a1 * inv1) + (a2 * inv2 + a3 * inv3);
                    }
                }
                for (; i < i1; i++) {
                    const float *g = as_floats(job->g[k], job->gtypes[k], i * n, n, gf[0]);
                    float inv = 1.0f / row_statistic(job, k, i, g, &sq_p);
#pragma omp simd
                    for (int64_t j = 0; j < n; j++) {
                        float gg = g[j] * g[j];
                        cf[j] += gg;
                        wf[j] += gg * inv;
                    }
                }
#pragma omp simd
                for (int64_t j = 0; j < n; j++) {
                    cs[j] += cf[j];
                    ws[j] += wf[j];
                }
            }
            job->sq_p[v * job->count + k] = sq_p;
        }
    }
    return NULL;
}

/* between the passes, per column span: the new C (row spans' sums added in order) and its part of the norm */
static void *columns(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = (job_t *)w->job;
    int64_t total_cols = job->col_offset[job->count];
    for (int v = w->index; v < SPANS; v += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t lo, hi, off = job->col_offset[k];
            span(job->cols[k], v, &lo, &hi);
            double b = job->beta2t[k], decay = 1.0 - b, norm = 0.0, rows = (double)job->rows[k];
            for (int64_t j = lo; j < hi; j++) {
                double cs = 0.0, ws = 0.0;
                for (int u = 0, spans = row_spans(job->rows[k]); u < spans; u++) {
                    cs += job->col_sums[u * total_cols + off + j];
                    ws += job->weighted[u * total_cols + off + j];
                }
                float c = (float)(b * job->col[k][j] + decay * (cs / rows) + decay * job->eps1);
                job->col[k][j] = c;
                norm += ws / (double)c;
            }
            job->norm[v * job->count + k] = norm;
        }
    }
    return NULL;
}

/* one thread: mean(R), the RMS of p and the squared norm of the update, handed back (span sums added in order) */
static void reduce(job_t *job) {
    for (int64_t k = 0; k < job->count; k++) {
        int64_t rows = job->rows[k];
        double row_sum = 0.0, norm = 0.0;
        for (int64_t i = 0; i < rows; i++) row_sum += job->row[k][i];
        for (int v = 0; v < SPANS; v++) norm += job->norm[v * job->count + k];
        double row_mean = row_sum / (double)rows;
        float rms = span_rms(job->sq_p + k, row_spans(rows), job->count, (double)rows * (double)job->cols[k]);
        if (!job->rms_in_apply) *job->rms[k] = rms;
        job->stats[3 * k] = row_mean;
        job->stats[3 * k + 1] = job->rms_in_apply ? NAN : (double)rms;
        job->stats[3 * k + 2] = row_mean * norm;
    }
}

/* before pass 2, per column span of every matrix: rsqrt of the new C */
static void *column_factors(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = (job_t *)w->job;
    for (int v = w->index; v < SPANS; v += job->threads) {
        int64_t off = 0;
        for (int64_t k = 0; k < job->count; off += job->cols[k++]) {
            int64_t lo, hi;
            span(job->cols[k], v, &lo, &hi);
            for (int64_t j = lo; j < hi; j++) job->col_rsqrt[off + j] = (float)(1.0 / sqrt((double)job->col[k][j]));
        }
    }
    return NULL;
}

/* pass 2, per row span: weight decay, first moment, parameter (with rms_in_apply, first the row's sum of p^2) */
static void *pass2(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = (job_t *)w->job;
    for (int v = w->index; v < SPANS; v += job->threads) {
        int64_t off = 0;
        for (int64_t k = 0; k < job->count; off += job->cols[k++]) {
            int64_t n = job->cols[k], lo, hi;
            span(job->rows[k], v, &lo, &hi);
            const float *crs = job->col_rsqrt + off;
            const double *sc = job->scalars + 4 * k;  /* mean(R), coef, decay, m_scale */
            float wd_lr = (float)sc[2], step = (float)sc[3];
            int decay = job->decay;
            float beta1 = (float)job->beta1, one_minus = (float)(1.0 - job->beta1);
            int type = job->ptypes[k], gtype = job->gtypes[k];
            int64_t chunk = type == TYPE_F32 && gtype == TYPE_F32 ? UPDATE_CHUNK : CONVERT_CHUNK;
            float buf[CONVERT_CHUNK], gbuf[CONVERT_CHUNK];
            double sq_p = 0.0;
            for (int64_t i = lo; i < hi; i++) {
                float r = (float)(sc[1] / sqrt((double)job->row[k][i] / sc[0]));
                double q = 0.0;  /* the row's sum of p^2, as row_statistic adds it up */
                for (int64_t j0 = 0; j0 < n; j0 += chunk) {
                    int64_t len = n - j0 < chunk ? n - j0 : chunk;
                    if (job->rms_in_apply) q = squares(job->p[k], type, i * n + j0, len, q);
                    const float *g = as_floats(job->g[k], gtype, i * n + j0, len, gbuf), *c = crs + j0;
                    float *p = as_floats(job->p[k], type, i * n + j0, len, buf);
                    if (decay) {
#pragma omp simd
                        for (int64_t j = 0; j < len; j++) p[j] -= wd_lr * p[j];
                    }
                    if (job->m == NULL) {
#pragma omp simd
                        for (int64_t j = 0; j < len; j++) p[j] -= g[j] * (r * c[j]);
                    } else {
                        float *m = job->m[k] + i * n + j0;
#pragma omp simd
                        for (int64_t j = 0; j < len; j++) {
                            float mj = beta1 * m[j] + one_minus * (g[j] * (r * c[j]));
                            m[j] = mj;
                            p[j] -= step * mj;
                        }
                    }
                    store_param(job->p[k], type, i * n + j0, len, p);
                }
                sq_p += q;
            }
            if (job->rms_in_apply) job->sq_p[v * job->count + k] = sq_p;
        }
    }
    return NULL;
}

/* The threads of a call are OpenMP's: the team torch's own intra-op parallelism uses on this thread (the library is
 * built with -fopenmp and binds to the libgomp torch has loaded), so the kernel neither starts threads nor competes
 * with torch's workers, which spin for a while after each of torch's parallel ops and would take the cores from
 * threads of another pool (measured: a step twice as slow right after a torch op). Each thread index runs its share
 * of the spans; where OpenMP grants fewer threads than asked, the granted ones run the other indices' shares too,
 * so the result is the same. Without OpenMP (a compiler without -fopenmp), inside another parallel region, or in a
 * forked child of the process that first used the team (libgomp cannot use its threads there), a call runs on the
 * calling thread alone. The caller asks for one thread for a call over fewer than 2^15 elements
 * (adafactor_call.PARALLEL_ELEMENTS), where starting and joining the team costs more than it saves. */
#ifdef _OPENMP
static pid_t team_pid;            /* the process whose OpenMP team the kernel uses; 0 before the first parallel call */
#endif

static void run_threads(void *job, int threads, void *(*fn)(void *)) {
    worker_t workers[SPANS];
    for (int t = 0; t < threads; t++) {
        workers[t].job = job;
        workers[t].index = t;
    }
#ifdef _OPENMP
    pid_t self = getpid();
    if (!omp_in_parallel()) {
        /* the first calling process claims the team even with one thread asked for: a child it forks later then
         * runs on one thread, whether or not the parent's calls were large enough to start the team */
        pid_t expected = 0;
        __atomic_compare_exchange_n(&team_pid, &expected, self, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        if (threads > 1 && __atomic_load_n(&team_pid, __ATOMIC_ACQUIRE) == self) {
#pragma omp parallel num_threads(threads)
            {
                int granted = omp_get_num_threads();
                for (int t = omp_get_thread_num(); t < threads; t += granted) fn(&workers[t]);
            }
            return;
        }
    }
#endif
    for (int t = 0; t < threads; t++) fn(&workers[t]);
}

/* The buffers of matrix k, in the order of both calls' arguments and of their numel array. */
enum { BUF_G, BUF_P, BUF_M, BUF_ROW, BUF_COL, BUF_RMS, BUFFERS };
/* the other arrays of a call, numbered after the buffers (for HF_E_ARRAY): rows, cols, numel, types, then its own:
 * hf_adafactor_statistics: beta2t, stats;  hf_adafactor_apply: scalars, work */
enum { ARG_ROWS = BUFFERS, ARG_COLS, ARG_NUMEL, ARG_TYPES, ARG_OWN };

#define HF_E_NOMEM (-1)        /* work memory could not be allocated */
#define HF_E_COUNT (-2)        /* count < 0, or more than MAX_ELEMENTS */
#define HF_E_THREADS (-3)      /* threads < 1 */
#define HF_E_ROWS (-4)         /* rows[k] < 1 */
#define HF_E_COLS (-5)         /* cols[k] < 1 */
#define HF_E_TOO_LARGE (-6)    /* rows[k] * cols[k] overflows int64_t or exceeds MAX_ELEMENTS */
#define HF_E_WORK (-7)         /* hf_adafactor_apply: the work buffer holds fewer floats than all matrices' columns */
#define HF_E_TYPE (-8)         /* the gradient's or parameter's type code is not one of this build's */
#define HF_E_SUMS (-9)         /* an apply call with rms_in_apply: its sums buffer is NULL, misaligned or too small */
#define HF_E_NULL (-10)        /* - buffer: matrix k's pointer to that buffer is NULL */
#define HF_E_ALIGN (-20)       /* - buffer: that pointer is not aligned to its element type */
#define HF_E_SIZE (-30)        /* - buffer: its element count differs from what rows[k] and cols[k] need */
#define HF_E_ARRAY (-40)       /* - buffer or ARG_*: that array argument is NULL (bad_index -1) */
/* elements of one matrix at most (2^54 floats: more than any address space holds), so that no size computed from
 * rows, cols and count (times SPANS, 2, sizeof(double) and the thread count) overflows */
#define MAX_ELEMENTS ((int64_t)1 << 54)

/* whether the element type code is one this build takes */
static int known_type(int32_t type) { return type >= 0 && type < TYPES; }

static int check(int64_t count, void **const buffers[BUFFERS], const int64_t *rows, const int64_t *cols,
                 const int64_t *numel, const int32_t *types, const void *own0, const void *own1, int threads,
                 int64_t *bad_index) {
    *bad_index = -1;
    if (count < 0 || count > MAX_ELEMENTS) return HF_E_COUNT;
    if (threads < 1) return HF_E_THREADS;
    for (int b = 0; b < BUFFERS; b++)
        if (buffers[b] == NULL && b != BUF_M) return HF_E_ARRAY - b;  /* m: NULL as a whole without a first moment */
    const void *arrays[] = {rows, cols, numel, types, own0, own1};
    for (int a = ARG_ROWS; a <= ARG_OWN + 1; a++)
        if (arrays[a - ARG_ROWS] == NULL) return HF_E_ARRAY - a;
    for (int64_t k = 0; k < count; k++) {
        *bad_index = k;
        if (!known_type(types[k]) || !known_type(types[count + k])) return HF_E_TYPE;
        if (rows[k] < 1) return HF_E_ROWS;
        if (cols[k] < 1) return HF_E_COLS;
        if (rows[k] > MAX_ELEMENTS / cols[k]) return HF_E_TOO_LARGE;
        int64_t need[BUFFERS] = {rows[k] * cols[k], rows[k] * cols[k], rows[k] * cols[k], rows[k], cols[k], 1};
        for (int b = 0; b < BUFFERS; b++) {
            if (buffers[b] == NULL) continue;
            int64_t have = numel[b * count + k];
            if (b == BUF_RMS ? have < need[b] : have != need[b]) return HF_E_SIZE - b;
            if (buffers[b][k] == NULL) return HF_E_NULL - b;  /* (an empty buffer may have none: its size is wrong) */
            if ((uintptr_t)buffers[b][k] % (b <= BUF_P ? type_size[types[b * count + k]] : 4)) return HF_E_ALIGN - b;
        }
    }
    *bad_index = -1;
    return 0;
}

/* Both calls take count matrices' buffers and shapes; numel holds BUFFERS * count element counts: numel[b * count + k]
 * is that of matrix k's buffer b (in the order g, p, m, row, col, rms; the counts of m are not read when m is NULL);
 * types[b * count + k] is the TYPE_* of matrix k's gradient (b = 0) and parameter (b = 1); the others are float32.
 * Each checks every argument first and changes nothing when one is wrong: it returns 0, HF_E_NOMEM, or the HF_E_*
 * code of the first problem, with the matrix's index in *bad_index (-1 when the problem is not one matrix's;
 * bad_index may be NULL). m is only checked by the statistics call, so that a step refused anywhere is refused
 * before its first write. */

/* Pass 1 of a step: R, C and the rms buffer updated in place; stats[3 * k .. 3 * k + 2] receive mean(R), RMS(p) (the
 * float stored) and the squared norm of the unclipped update of matrix k. With rms_in_apply (!= 0), p is not read,
 * the rms buffer is left to hf_adafactor_apply and RMS(p) is handed back as NaN. */
int hf_adafactor_statistics(int64_t count, void **g, void **p, float **m, float **row, float **col, float **rms,
                            const int64_t *rows, const int64_t *cols, const int64_t *numel, const int32_t *types,
                            const double *beta2t, double *stats, double eps1, int rms_in_apply, int threads,
                            int64_t *bad_index) {
    int64_t ignored, *bad = bad_index ? bad_index : &ignored;
    void **const buffers[BUFFERS] = {g, p, (void **)m, (void **)row, (void **)col, (void **)rms};
    int problem = check(count, buffers, rows, cols, numel, types, beta2t, stats, threads, bad);
    if (problem != 0) return problem;
    int64_t group_cols = GROUP_BYTES / (2 * SPANS * (int64_t)sizeof(double)), widest = 0, all_cols = 0;
    for (int64_t k = 0; k < count; k++) {
        widest = cols[k] > widest ? cols[k] : widest;
        all_cols = all_cols + cols[k] < group_cols ? all_cols + cols[k] : group_cols;  /* capped: no overflow */
    }
    group_cols = widest > all_cols ? widest : all_cols;  /* no more than the call's columns need */
    threads = threads > SPANS ? SPANS : threads;
    int64_t *col_offset = malloc(sizeof(int64_t) * (size_t)(count + 1));
    double *sums = malloc(sizeof(double) * 2 * SPANS * (size_t)group_cols);
    double *per_matrix = malloc(sizeof(double) * 2 * SPANS * (size_t)count);
    float *floats = malloc(sizeof(float) * (2 + ROW_GROUP) * (size_t)widest * (size_t)threads);
    int failed = !col_offset || !sums || !per_matrix || !floats;
    for (int64_t first = 0; !failed && first < count;) {
        int64_t last = first, width = 0;
        while (last < count && (last == first || width + cols[last] <= group_cols)) width += cols[last++];
        job_t job = {.count = last - first, .g = g + first, .p = p + first, .row = row + first, .col = col + first,
                     .rms = rms + first, .rows = rows + first, .cols = cols + first, .gtypes = types + first,
                     .ptypes = types + count + first,
                     .beta2t = beta2t + first,
                     .eps1 = eps1, .stats = stats + 3 * first, .threads = threads, .rms_in_apply = rms_in_apply != 0,
                     .col_offset = col_offset,
                     .widest = widest, .col_sums = sums, .weighted = sums + SPANS * width, .float_sums = floats};
        job.sq_p = per_matrix;
        job.norm = per_matrix + SPANS * job.count;
        col_offset[0] = 0;
        for (int64_t k = 0; k < job.count; k++) col_offset[k + 1] = col_offset[k] + job.cols[k];
        run_threads(&job, threads, pass1);
        run_threads(&job, threads, columns);
        reduce(&job);
        first = last;
    }
    free(col_offset);
    free(sums);
    free(per_matrix);
    free(floats);
    return failed ? HF_E_NOMEM : 0;
}

/* whether an apply call with rms_in_apply has room for its partial sums: sums_numel doubles at sums, at least
 * 2 * SPANS * count (the unfactored call's layout; the factored call uses the first half) */
static int sums_fit(int rms_in_apply, int64_t count, const double *sums, int64_t sums_numel) {
    if (!rms_in_apply || count == 0) return 1;
    return sums != NULL && (uintptr_t)sums % sizeof(double) == 0 && sums_numel / (2 * SPANS) >= count;
}

/* Pass 2 of a step, after hf_adafactor_statistics on the same buffers (and with the same rms_in_apply):
 * scalars[4 * k .. 4 * k + 3] are matrix k's mean(R), coef, decay and m_scale (see the top of this file), computed by
 * the caller; decay != 0 turns weight decay on; work is a float buffer of work_numel elements, at least the columns
 * of all matrices together. With rms_in_apply (!= 0) it also writes the RMS of p before the step into the rms
 * buffer, and sums (sums_numel doubles, see sums_fit) holds its partial sums. Allocates nothing. */
int hf_adafactor_apply(int64_t count, void **g, void **p, float **m, float **row, float **col, float **rms,
                       const int64_t *rows, const int64_t *cols, const int64_t *numel, const int32_t *types,
                       const double *scalars, float *work, int64_t work_numel, double beta1, int decay,
                       int rms_in_apply, double *sums, int64_t sums_numel, int threads, int64_t *bad_index) {
    int64_t ignored, *bad = bad_index ? bad_index : &ignored;
    void **const buffers[BUFFERS] = {g, p, (void **)m, (void **)row, (void **)col, (void **)rms};
    int problem = check(count, buffers, rows, cols, numel, types, scalars, work, threads, bad);
    if (problem != 0) return problem;
    if ((uintptr_t)work % sizeof(float) != 0) return HF_E_WORK;
    for (int64_t k = 0, total = 0; k < count; k++) {  /* stops before the sum could overflow (cols < MAX_ELEMENTS) */
        total += cols[k];
        if (total > work_numel) return HF_E_WORK;
    }
    if (!sums_fit(rms_in_apply, count, sums, sums_numel)) return HF_E_SUMS;
    threads = threads > SPANS ? SPANS : threads;
    double *sq_p = rms_in_apply ? sums : NULL;
    job_t job = {.count = count, .g = g, .p = p, .m = m, .row = row, .col = col, .rows = rows, .cols = cols,
                 .gtypes = types, .ptypes = types + count, .scalars = scalars, .beta1 = beta1, .decay = decay,
                 .threads = threads, .rms_in_apply = rms_in_apply != 0, .sq_p = sq_p, .col_rsqrt = work};
    run_threads(&job, threads, column_factors);
    run_threads(&job, threads, pass2);
    for (int64_t k = 0; sq_p != NULL && k < count; k++)
        *rms[k] = span_rms(sq_p + k, SPANS, count, (double)rows[k] * (double)cols[k]);
    return 0;
}

/* Unfactored tensors (1-D parameters, or any rank with one statistic V per element), as flat arrays of n[k] floats:
 *
 *   hf_adafactor_flat_statistics (pass 1, given b = beta2t of each tensor):
 *     V = b V + (1-b) g^2 + (1-b) eps1  (float32, in that order, as the torch path's in-place ops)
 *     returns per tensor 1 (so that its stats have the factored layout), RMS(p) (also written to the rms buffer;
 *     with rms_in_apply NaN, and the apply call writes it, as for matrices) and sum_j g_j^2 / V_j, the squared norm
 *     of the update g rsqrt(V)
 *   hf_adafactor_flat_apply (pass 2, given per tensor the [mean(R), coef, decay, m_scale] of the factored call, of
 *   which mean(R) is not read):
 *     update = (g rsqrt(V)) coef;  p = p - decay p;  m = beta1 m + (1-beta1) update;  p = p - m_scale m
 *     (without a first moment: p = p - update)
 *
 * Every tensor is cut into SPANS element spans whatever the thread count, each with its own partial sums, added in
 * span order: the result does not depend on the number of threads. The buffers are g, p, m, V and rms, with the
 * element counts of each in numel (numel[b * count + k], b in that order) and the TYPE_* of each gradient and
 * parameter in types (types[b * count + k], b = 0, 1), checked before anything is read. */
enum { FLAT_G, FLAT_P, FLAT_M, FLAT_V, FLAT_RMS, FLAT_BUFFERS };

typedef struct {
    int64_t count;
    void **g, **p;                    /* of the element types gtypes[k], ptypes[k] */
    float **m, **v, **rms;            /* m: NULL, or one pointer per tensor */
    const int64_t *n;
    const int32_t *gtypes, *ptypes;
    const double *beta2t;             /* pass 1 */
    double eps1;
    double *partial;                  /* [SPANS][2 * count]: sums of p^2 and (pass 1) of g^2 / V per span */
    const double *scalars;            /* pass 2, [4 * k]: mean(R) (unused), coef, decay, m_scale */
    double beta1;
    int decay, threads;
    int rms_in_apply;                 /* whether pass 2, not pass 1, sums p^2 */
} flat_job_t;

static void *flat_pass1(void *arg) {
    worker_t *w = (worker_t *)arg;
    flat_job_t *job = (flat_job_t *)w->job;
    for (int s = w->index; s < SPANS; s += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t lo, hi;
            span(job->n[k], s, &lo, &hi);
            float *v = job->v[k];
            float b = (float)job->beta2t[k], d = (float)(1.0 - job->beta2t[k]), de = (float)((1.0 - job->beta2t[k]) * job->eps1);
            double sq_p = 0.0, sq_u = 0.0;
            for (int64_t j0 = lo; j0 < hi; j0 += FLOAT_CHUNK) {  /* float partial sums, added in double */
                int64_t j1 = j0 + FLOAT_CHUNK < hi ? j0 + FLOAT_CHUNK : hi;
                float uf = 0.0f, gbuf[FLOAT_CHUNK];
                if (!job->rms_in_apply) sq_p = squares(job->p[k], job->ptypes[k], j0, j1 - j0, sq_p);
                const float *g = as_floats(job->g[k], job->gtypes[k], j0, j1 - j0, gbuf);
#pragma omp simd reduction(+ : uf)
                for (int64_t j = j0; j < j1; j++) {
                    float gg = g[j - j0] * g[j - j0];
                    float vj = (b * v[j] + d * gg) + de;
                    v[j] = vj;
                    uf += gg / vj;
                }
                sq_u += uf;
            }
            job->partial[(int64_t)s * 2 * job->count + 2 * k] = sq_p;
            job->partial[(int64_t)s * 2 * job->count + 2 * k + 1] = sq_u;
        }
    }
    return NULL;
}

static void *flat_pass2(void *arg) {
    worker_t *w = (worker_t *)arg;
    flat_job_t *job = (flat_job_t *)w->job;
    for (int s = w->index; s < SPANS; s += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t lo, hi;
            span(job->n[k], s, &lo, &hi);
            const double *sc = job->scalars + 4 * k;
            float coef = (float)sc[1], wd_lr = (float)sc[2], step = (float)sc[3];
            float beta1 = (float)job->beta1, one_minus = (float)(1.0 - job->beta1);
            int type = job->ptypes[k], gtype = job->gtypes[k];
            int64_t chunk = type == TYPE_F32 && gtype == TYPE_F32 ? UPDATE_CHUNK : CONVERT_CHUNK;
            float buf[CONVERT_CHUNK], gbuf[CONVERT_CHUNK];
            double sq_p = 0.0;
            for (int64_t j0 = lo; j0 < hi; j0 += chunk) {
                int64_t len = hi - j0 < chunk ? hi - j0 : chunk;
                if (job->rms_in_apply) sq_p = squares(job->p[k], type, j0, len, sq_p);
                const float *g = as_floats(job->g[k], gtype, j0, len, gbuf), *v = job->v[k] + j0;
                float *p = as_floats(job->p[k], type, j0, len, buf);
                if (job->decay) {
#pragma omp simd
                    for (int64_t j = 0; j < len; j++) p[j] -= wd_lr * p[j];
                }
                if (job->m == NULL) {
#pragma omp simd
                    for (int64_t j = 0; j < len; j++) p[j] -= (g[j] * (1.0f / sqrtf(v[j]))) * coef;
                } else {
                    float *m = job->m[k] + j0;
#pragma omp simd
                    for (int64_t j = 0; j < len; j++) {
                        float mj = beta1 * m[j] + one_minus * ((g[j] * (1.0f / sqrtf(v[j]))) * coef);
                        m[j] = mj;
                        p[j] -= step * mj;
                    }
                }
                store_param(job->p[k], type, j0, len, p);
            }
            if (job->rms_in_apply) job->partial[(int64_t)s * 2 * job->count + 2 * k] = sq_p;
        }
    }
    return NULL;
}

/* the RMS of each tensor from the span sums of p^2 in partial (added in span order), into the rms buffer and, where
 * stats is not NULL, into its stats */
static void flat_rms(flat_job_t *job, double *stats) {
    for (int64_t k = 0; k < job->count; k++) {
        float r = span_rms(job->partial + 2 * k, SPANS, 2 * job->count, (double)job->n[k]);
        *job->rms[k] = r;
        if (stats != NULL) stats[3 * k + 1] = (double)r;
    }
}

static int flat_check(int64_t count, void **const buffers[FLAT_BUFFERS], const int64_t *n, const int64_t *numel,
                      const int32_t *types, const void *own0, int threads, int64_t *bad_index) {
    *bad_index = -1;
    if (count < 0 || count > MAX_ELEMENTS / (2 * SPANS)) return HF_E_COUNT;
    if (threads < 1) return HF_E_THREADS;
    for (int b = 0; b < FLAT_BUFFERS; b++)
        if (buffers[b] == NULL && b != FLAT_M) return HF_E_ARRAY - b;
    if (n == NULL) return HF_E_ARRAY - FLAT_BUFFERS;
    if (numel == NULL) return HF_E_ARRAY - (FLAT_BUFFERS + 1);
    if (types == NULL) return HF_E_ARRAY - (FLAT_BUFFERS + 2);
    if (own0 == NULL) return HF_E_ARRAY - (FLAT_BUFFERS + 3);
    for (int64_t k = 0; k < count; k++) {
        *bad_index = k;
        if (!known_type(types[k]) || !known_type(types[count + k])) return HF_E_TYPE;
        if (n[k] < 1) return HF_E_COLS;
        if (n[k] > MAX_ELEMENTS) return HF_E_TOO_LARGE;
        for (int b = 0; b < FLAT_BUFFERS; b++) {
            if (buffers[b] == NULL) continue;
            int64_t have = numel[b * count + k];
            if (b == FLAT_RMS ? have < 1 : have != n[k]) return HF_E_SIZE - b;
            if (buffers[b][k] == NULL) return HF_E_NULL - b;
            if ((uintptr_t)buffers[b][k] % (b <= FLAT_P ? type_size[types[b * count + k]] : 4)) return HF_E_ALIGN - b;
        }
    }
    *bad_index = -1;
    return 0;
}

/* Pass 1 of a step of unfactored tensors: V and rms updated in place; stats[3 * k .. 3 * k + 2] receive 1, RMS(p)
 * (the float stored) and sum_j g_j^2 / V_j of tensor k; with rms_in_apply (!= 0), p is not read, the rms buffer is
 * left to hf_adafactor_flat_apply and RMS(p) is handed back as NaN. Allocates its partial sums (HF_E_NOMEM when it
 * cannot). */
int hf_adafactor_flat_statistics(int64_t count, void **g, void **p, float **m, float **v, float **rms,
                                 const int64_t *n, const int64_t *numel, const int32_t *types, const double *beta2t,
                                 double *stats, double eps1, int rms_in_apply, int threads, int64_t *bad_index) {
    int64_t ignored, *bad = bad_index ? bad_index : &ignored;
    void **const buffers[FLAT_BUFFERS] = {g, p, (void **)m, (void **)v, (void **)rms};
    int problem = flat_check(count, buffers, n, numel, types, beta2t, threads, bad);
    if (problem == 0 && stats == NULL) problem = HF_E_ARRAY - (FLAT_BUFFERS + 4);
    if (problem != 0) return problem;
    threads = threads > SPANS ? SPANS : threads;
    double *partial = malloc(sizeof(double) * 2 * SPANS * (size_t)(count > 0 ? count : 1));
    if (partial == NULL) return HF_E_NOMEM;
    flat_job_t job = {.count = count, .g = g, .p = p, .v = v, .rms = rms, .n = n, .gtypes = types, .ptypes = types + count,
                      .beta2t = beta2t,
                      .eps1 = eps1,
                      .partial = partial, .threads = threads, .rms_in_apply = rms_in_apply != 0};
    run_threads(&job, threads, flat_pass1);
    for (int64_t k = 0; k < count; k++) {
        double sq_u = 0.0;
        for (int s = 0; s < SPANS; s++) sq_u += partial[(int64_t)s * 2 * count + 2 * k + 1];
        stats[3 * k] = 1.0;
        stats[3 * k + 1] = NAN;
        stats[3 * k + 2] = sq_u;
    }
    if (!job.rms_in_apply) flat_rms(&job, stats);
    free(partial);
    return 0;
}

/* Pass 2 of a step of unfactored tensors, after hf_adafactor_flat_statistics on the same buffers and with the same
 * rms_in_apply (scalars as in hf_adafactor_apply). With rms_in_apply it also writes the RMS of p before the step into
 * the rms buffer, and sums (sums_numel doubles, see sums_fit) holds its partial sums. Allocates nothing. */
int hf_adafactor_flat_apply(int64_t count, void **g, void **p, float **m, float **v, float **rms, const int64_t *n,
                            const int64_t *numel, const int32_t *types, const double *scalars, double beta1, int decay,
                            int rms_in_apply, double *sums, int64_t sums_numel, int threads, int64_t *bad_index) {
    int64_t ignored, *bad = bad_index ? bad_index : &ignored;
    void **const buffers[FLAT_BUFFERS] = {g, p, (void **)m, (void **)v, (void **)rms};
    int problem = flat_check(count, buffers, n, numel, types, scalars, threads, bad);
    if (problem != 0) return problem;
    if (!sums_fit(rms_in_apply, count, sums, sums_numel)) return HF_E_SUMS;
    threads = threads > SPANS ? SPANS : threads;
    double *partial = rms_in_apply && count > 0 ? sums : NULL;
    flat_job_t job = {.count = count, .g = g, .p = p, .m = m, .v = v, .rms = rms, .n = n, .gtypes = types,
                      .ptypes = types + count, .partial = partial, .scalars = scalars, .beta1 = beta1, .decay = decay,
                      .threads = threads, .rms_in_apply = partial != NULL};
    run_threads(&job, threads, flat_pass2);
    if (partial != NULL) flat_rms(&job, NULL);
    return 0;
}
