/* Adafactor's factored update for a list of float32 CPU matrices, in two passes over memory.
 *
 * Compiled at first use by hf_optim_torch/_native/__init__.py (plain C99 + pthreads, no torch headers) and called
 * through ctypes. The formulas are those of spec/optimizers/adafactor.json for a 2-D parameter (R: row statistics,
 * C: column statistics, both updated in place):
 *
 *   u = g^2 + eps1;  R = b R + (1-b) mean_j u;  C = b C + (1-b) mean_i u      (b: beta2t of the step)
 *   update = g * rsqrt(R_i / mean(R)) * rsqrt(C_j);  clip = max(1, RMS(update) / clip_threshold)
 *   lr = max(eps2, RMS(p)) * rel  (scale_parameter)  or  rel
 *   m = beta1 m + (1-beta1) lr update / clip  (beta1 >= 0; "unscaled": m averages update / clip)
 *   p = p - weight_decay lr p;  p = p - (m, or lr m when unscaled, or lr update / clip without beta1)
 *
 * Pass 1 reads g and p once: for each row, sum_j g^2 gives the new R_i (final once the row is read), and the row's
 * g^2 is added into per-thread column sums of g^2 and of g^2 / R_i, so that the squared norm of the update needs no
 * second read of g:  sum_ij (r_i c_j g_ij)^2 = mean(R) * sum_j (sum_i g_ij^2 / R_i) / C_j.  Pass 2 reads g, p (and m)
 * and writes p (and m). Sums are accumulated in double (column sums in float over FLOAT_ROWS rows at a time, then
 * in double); each element's arithmetic is float32, as on the torch path.
 *
 * The result does not depend on the number of threads: every matrix is cut into SPANS row spans (and SPANS column
 * spans between the passes) whatever the thread count, each span has its own partial sums, and the partial sums are
 * added in span order. Matrices are processed in groups whose partial sums fit in GROUP_BYTES.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define SPANS 12                  /* divisible by 1, 2, 3, 4 and 6 threads; more threads than SPANS are not used */
#define FLOAT_ROWS 32             /* rows whose column sums are accumulated in float, then added in double */
#define GROUP_BYTES (8 << 20)     /* partial column sums of one group of matrices */

typedef struct {
    int64_t count;                /* matrices of this group */
    float **g, **p, **m;          /* m: NULL, or one pointer per matrix */
    float **row, **col, **rms;    /* rms: one float per matrix, written */
    const int64_t *rows, *cols;
    const double *rel, *beta2t;   /* per matrix: the step's relative lr (or lr) and beta2t */
    double eps1, eps2, clip_threshold, beta1, weight_decay;
    int scale_parameter, unscaled, threads;
    /* work */
    int64_t *col_offset;          /* [count + 1]: start of matrix k's columns in the flat column arrays */
    int64_t widest;               /* most columns of a matrix in the group */
    double *col_sums, *weighted;  /* [SPANS][group columns]: partial sums of g^2 and g^2 / R_i per row span */
    float *float_sums;            /* [threads][2][widest] */
    double *sq_p, *norm;          /* [SPANS][count]: partial sums of p^2 (row spans), of (g^2/R)/C (column spans) */
    float *col_rsqrt;             /* [group columns]: rsqrt of the new C */
    double *row_mean, *coef, *lr; /* [count] each */
} job_t;

typedef struct {
    job_t *job;
    int index;
} worker_t;

static void span(int64_t n, int index, int64_t *lo, int64_t *hi) {
    *lo = n * index / SPANS;
    *hi = n * (index + 1) / SPANS;
}

/* pass 1: row statistics, and per row span the column sums and the sum of p^2 */
static void *pass1(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = w->job;
    int64_t total_cols = job->col_offset[job->count];
    float *cf = job->float_sums + (int64_t)w->index * 2 * job->widest, *wf = cf + job->widest;
    for (int v = w->index; v < SPANS; v += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t n = job->cols[k], lo, hi;
            span(job->rows[k], v, &lo, &hi);
            double b = job->beta2t[k], decay = 1.0 - b, sq_p = 0.0;
            double *cs = job->col_sums + v * total_cols + job->col_offset[k];
            double *ws = job->weighted + v * total_cols + job->col_offset[k];
            for (int64_t j = 0; j < n; j++) cs[j] = ws[j] = 0.0;
            for (int64_t i0 = lo; i0 < hi; i0 += FLOAT_ROWS) {
                int64_t i1 = i0 + FLOAT_ROWS < hi ? i0 + FLOAT_ROWS : hi;
                for (int64_t j = 0; j < n; j++) cf[j] = wf[j] = 0.0f;
                for (int64_t i = i0; i < i1; i++) {
                    const float *g = job->g[k] + i * n, *p = job->p[k] + i * n;
                    double s = 0.0, q = 0.0;
#pragma omp simd reduction(+ : s, q)
                    for (int64_t j = 0; j < n; j++) {
                        s += g[j] * g[j];
                        q += p[j] * p[j];
                    }
                    sq_p += q;
                    float r = (float)(b * job->row[k][i] + decay * (s / (double)n) + decay * job->eps1);
                    job->row[k][i] = r;
                    float inv = 1.0f / r;
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
    job_t *job = w->job;
    int64_t total_cols = job->col_offset[job->count];
    for (int v = w->index; v < SPANS; v += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t lo, hi, off = job->col_offset[k];
            span(job->cols[k], v, &lo, &hi);
            double b = job->beta2t[k], decay = 1.0 - b, norm = 0.0, rows = (double)job->rows[k];
            for (int64_t j = lo; j < hi; j++) {
                double cs = 0.0, ws = 0.0;
                for (int u = 0; u < SPANS; u++) {
                    cs += job->col_sums[u * total_cols + off + j];
                    ws += job->weighted[u * total_cols + off + j];
                }
                float c = (float)(b * job->col[k][j] + decay * (cs / rows) + decay * job->eps1);
                job->col[k][j] = c;
                job->col_rsqrt[off + j] = (float)(1.0 / sqrt((double)c));
                norm += ws / (double)c;
            }
            job->norm[v * job->count + k] = norm;
        }
    }
    return NULL;
}

/* one thread: mean(R), the RMS of p and of the update, lr, clipping (span sums added in order) */
static void scalars(job_t *job) {
    for (int64_t k = 0; k < job->count; k++) {
        int64_t rows = job->rows[k];
        double row_sum = 0.0, norm = 0.0, sq_p = 0.0;
        for (int64_t i = 0; i < rows; i++) row_sum += job->row[k][i];
        for (int v = 0; v < SPANS; v++) {
            norm += job->norm[v * job->count + k];
            sq_p += job->sq_p[v * job->count + k];
        }
        double row_mean = row_sum / (double)rows, numel = (double)rows * (double)job->cols[k];
        double rms = sqrt(sq_p / numel), update_sq = row_mean * norm;
        *job->rms[k] = (float)rms;
        double lr = job->scale_parameter ? fmax(job->eps2, (double)(float)rms) * job->rel[k] : job->rel[k];
        double clip = fmax(1.0, sqrt(update_sq / numel) / job->clip_threshold);
        job->row_mean[k] = row_mean;
        job->lr[k] = lr;
        job->coef[k] = (job->unscaled && job->m != NULL) ? 1.0 / clip : lr / clip;
    }
}

/* pass 2, per row span: weight decay, first moment, parameter */
static void *pass2(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = w->job;
    for (int v = w->index; v < SPANS; v += job->threads) {
        for (int64_t k = 0; k < job->count; k++) {
            int64_t n = job->cols[k], lo, hi;
            span(job->rows[k], v, &lo, &hi);
            const float *crs = job->col_rsqrt + job->col_offset[k];
            float wd_lr = (float)(job->weight_decay * job->lr[k]);
            int decay = job->weight_decay != 0.0;
            float lr = (float)job->lr[k], beta1 = (float)job->beta1, one_minus = (float)(1.0 - job->beta1);
            float step = job->unscaled ? lr : 1.0f;
            for (int64_t i = lo; i < hi; i++) {
                const float *g = job->g[k] + i * n;
                float *p = job->p[k] + i * n;
                float r = (float)(job->coef[k] / sqrt((double)job->row[k][i] / job->row_mean[k]));
                if (decay) {
#pragma omp simd
                    for (int64_t j = 0; j < n; j++) p[j] -= wd_lr * p[j];
                }
                if (job->m == NULL) {
#pragma omp simd
                    for (int64_t j = 0; j < n; j++) p[j] -= g[j] * (r * crs[j]);
                } else {
                    float *m = job->m[k] + i * n;
#pragma omp simd
                    for (int64_t j = 0; j < n; j++) {
                        float mj = beta1 * m[j] + one_minus * (g[j] * (r * crs[j]));
                        m[j] = mj;
                        p[j] -= step * mj;
                    }
                }
            }
        }
    }
    return NULL;
}

static void run_threads(job_t *job, void *(*fn)(void *)) {
    pthread_t handles[SPANS];
    worker_t workers[SPANS];
    int started = 0;
    for (int t = 0; t < job->threads; t++) {
        workers[t].job = job;
        workers[t].index = t;
    }
    for (int t = 1; t < job->threads; t++) {
        if (pthread_create(&handles[t], NULL, fn, &workers[t]) != 0) break;
        started = t;
    }
    fn(&workers[0]);  /* a thread that could not start: the calling thread does its share after its own */
    for (int t = started + 1; t < job->threads; t++) fn(&workers[t]);
    for (int t = 1; t <= started; t++) pthread_join(handles[t], NULL);
}

/* Returns 0, or -1 when work memory could not be allocated (then nothing was changed). */
int hf_adafactor_factored(int64_t count, float **g, float **p, float **m, float **row, float **col, float **rms,
                          const int64_t *rows, const int64_t *cols, const double *rel, const double *beta2t,
                          double eps1, double eps2, double clip_threshold, double beta1, double weight_decay,
                          int scale_parameter, int unscaled, int threads) {
    int64_t group_cols = GROUP_BYTES / (2 * SPANS * (int64_t)sizeof(double)), max_cols = 0, widest = 0;
    for (int64_t k = 0; k < count; k++) {
        max_cols = cols[k] > max_cols ? cols[k] : max_cols;
        widest = cols[k] > widest ? cols[k] : widest;
    }
    group_cols = max_cols > group_cols ? max_cols : group_cols;
    threads = threads < 1 ? 1 : (threads > SPANS ? SPANS : threads);
    int64_t *col_offset = malloc(sizeof(int64_t) * (size_t)(count + 1));
    double *sums = malloc(sizeof(double) * 2 * SPANS * (size_t)group_cols);
    double *per_matrix = malloc(sizeof(double) * (2 * SPANS + 3) * (size_t)count);
    float *floats = malloc(sizeof(float) * ((size_t)group_cols + 2 * (size_t)widest * (size_t)threads));
    int failed = !col_offset || !sums || !per_matrix || !floats;
    for (int64_t first = 0; !failed && first < count;) {
        int64_t last = first, width = 0;
        while (last < count && (last == first || width + cols[last] <= group_cols)) width += cols[last++];
        job_t job = {.count = last - first, .g = g + first, .p = p + first, .m = m ? m + first : NULL,
                     .row = row + first, .col = col + first, .rms = rms + first, .rows = rows + first,
                     .cols = cols + first, .rel = rel + first, .beta2t = beta2t + first, .eps1 = eps1,
                     .eps2 = eps2, .clip_threshold = clip_threshold, .beta1 = beta1, .weight_decay = weight_decay,
                     .scale_parameter = scale_parameter, .unscaled = unscaled, .threads = threads,
                     .col_offset = col_offset, .widest = widest, .col_sums = sums, .weighted = sums + SPANS * width,
                     .col_rsqrt = floats, .float_sums = floats + group_cols};
        job.sq_p = per_matrix;
        job.norm = per_matrix + SPANS * job.count;
        job.row_mean = per_matrix + 2 * SPANS * job.count;
        job.coef = job.row_mean + job.count;
        job.lr = job.coef + job.count;
        col_offset[0] = 0;
        for (int64_t k = 0; k < job.count; k++) col_offset[k + 1] = col_offset[k] + job.cols[k];
        run_threads(&job, pass1);
        run_threads(&job, columns);
        scalars(&job);
        run_threads(&job, pass2);
        first = last;
    }
    free(col_offset);
    free(sums);
    free(per_matrix);
    free(floats);
    return failed ? -1 : 0;
}
