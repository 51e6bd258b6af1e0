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
 * and writes p (and m). Sums are accumulated in double (column sums in float
 * over FLOAT_ROWS rows at a time, then in double); each element's arithmetic is float32, as on the torch path.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    int64_t count;                /* matrices */
    float **g, **p, **m;          /* m: NULL, or one pointer per matrix */
    float **row, **col, **rms;    /* rms: one float per matrix, written */
    const int64_t *rows, *cols;
    const double *rel, *beta2t;   /* per matrix: the step's relative lr (or lr) and beta2t */
    double eps1, eps2, clip_threshold, beta1, weight_decay;
    int scale_parameter, unscaled;
    /* work, filled by the passes */
    int64_t *col_offset;          /* start of matrix k's columns in the flat column arrays */
    double *col_sums, *weighted;  /* [threads][total columns] */
    float *float_sums;            /* [threads][2][widest]: column sums of FLOAT_ROWS rows */
    int64_t widest;               /* most columns of a matrix */
    double *sq_p;                 /* [threads][count]: partial sums of p^2 */
    float *col_rsqrt;             /* [total columns]: rsqrt of the new C */
    double *row_mean, *coef, *lr; /* per matrix */
    int threads;
} job_t;

typedef struct {
    job_t *job;
    int index;
} worker_t;

static void row_span(int64_t rows, int threads, int index, int64_t *lo, int64_t *hi) {
    *lo = rows * index / threads;
    *hi = rows * (index + 1) / threads;
}

/* rows whose column sums are accumulated in float before they are added to the double sums */
#define FLOAT_ROWS 32

/* pass 1 for one thread: its share of the rows of every matrix */
static void *pass1(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = w->job;
    int64_t total_cols = job->col_offset[job->count];
    float *cf = job->float_sums + (int64_t)w->index * 2 * job->widest, *wf = cf + job->widest;
    double *col_sums = job->col_sums + (int64_t)w->index * total_cols;
    double *weighted = job->weighted + (int64_t)w->index * total_cols;
    for (int64_t k = 0; k < job->count; k++) {
        int64_t n = job->cols[k], lo, hi;
        row_span(job->rows[k], job->threads, w->index, &lo, &hi);
        double b = job->beta2t[k], decay = 1.0 - b, sq_p = 0.0;
        double *cs = col_sums + job->col_offset[k], *ws = weighted + job->col_offset[k];
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
        job->sq_p[(int64_t)w->index * job->count + k] = sq_p;
    }
    return NULL;
}

/* between the passes, one thread: new C, the RMS of p and of the update, lr, clipping */
static void reduce(job_t *job) {
    int64_t total_cols = job->col_offset[job->count];
    for (int64_t k = 0; k < job->count; k++) {
        int64_t rows = job->rows[k], n = job->cols[k], off = job->col_offset[k];
        double b = job->beta2t[k], decay = 1.0 - b, row_sum = 0.0, update_sq = 0.0, sq_p = 0.0;
        for (int64_t i = 0; i < rows; i++) row_sum += job->row[k][i];
        double row_mean = row_sum / (double)rows;
        for (int64_t j = 0; j < n; j++) {
            double cs = 0.0, ws = 0.0;
            for (int t = 0; t < job->threads; t++) {
                cs += job->col_sums[t * total_cols + off + j];
                ws += job->weighted[t * total_cols + off + j];
            }
            float c = (float)(b * job->col[k][j] + decay * (cs / (double)rows) + decay * job->eps1);
            job->col[k][j] = c;
            job->col_rsqrt[off + j] = (float)(1.0 / sqrt((double)c));
            update_sq += ws / (double)c;
        }
        update_sq *= row_mean;
        for (int t = 0; t < job->threads; t++) sq_p += job->sq_p[t * job->count + k];
        double numel = (double)rows * (double)n;
        double rms = sqrt(sq_p / numel);
        *job->rms[k] = (float)rms;
        double lr = job->scale_parameter ? fmax(job->eps2, (double)(float)rms) * job->rel[k] : job->rel[k];
        double clip = fmax(1.0, sqrt(update_sq / numel) / job->clip_threshold);
        job->row_mean[k] = row_mean;
        job->lr[k] = lr;
        job->coef[k] = (job->unscaled && job->m != NULL) ? 1.0 / clip : lr / clip;
    }
}

/* pass 2 for one thread: its rows of every matrix */
static void *pass2(void *arg) {
    worker_t *w = (worker_t *)arg;
    job_t *job = w->job;
    for (int64_t k = 0; k < job->count; k++) {
        int64_t n = job->cols[k], lo, hi;
        row_span(job->rows[k], job->threads, w->index, &lo, &hi);
        const float *crs = job->col_rsqrt + job->col_offset[k];
        float wd_lr = (float)(job->weight_decay * job->lr[k]);
        int decay = job->weight_decay != 0.0;
        float lr = (float)job->lr[k], beta1 = (float)job->beta1, one_minus = (float)(1.0 - job->beta1);
        float *m_base = job->m != NULL ? job->m[k] : NULL;
        for (int64_t i = lo; i < hi; i++) {
            const float *g = job->g[k] + i * n;
            float *p = job->p[k] + i * n;
            float r = (float)(job->coef[k] / sqrt((double)job->row[k][i] / job->row_mean[k]));
            if (decay) {
#pragma omp simd
                for (int64_t j = 0; j < n; j++) p[j] -= wd_lr * p[j];
            }
            if (m_base == NULL) {
#pragma omp simd
                for (int64_t j = 0; j < n; j++) p[j] -= g[j] * (r * crs[j]);
            } else {
                float *m = m_base + i * n;
                float step = job->unscaled ? lr : 1.0f;
#pragma omp simd
                for (int64_t j = 0; j < n; j++) {
                    float mj = beta1 * m[j] + one_minus * (g[j] * (r * crs[j]));
                    m[j] = mj;
                    p[j] -= step * mj;
                }
            }
        }
    }
    return NULL;
}

static int run_threads(job_t *job, void *(*fn)(void *)) {
    pthread_t handles[64];
    worker_t workers[64];
    int started = 0;
    for (int t = 0; t < job->threads; t++) {
        workers[t].job = job;
        workers[t].index = t;
    }
    for (int t = 1; t < job->threads; t++) {
        if (pthread_create(&handles[t], NULL, fn, &workers[t]) != 0) break;
        started = t;
    }
    /* a thread that could not start: the calling thread does its share after its own */
    fn(&workers[0]);
    for (int t = started + 1; t < job->threads; t++) fn(&workers[t]);
    for (int t = 1; t <= started; t++) pthread_join(handles[t], NULL);
    return 0;
}

/* Returns 0, or -1 when work memory could not be allocated (then nothing was changed). */
int hf_adafactor_factored(int64_t count, float **g, float **p, float **m, float **row, float **col, float **rms,
                          const int64_t *rows, const int64_t *cols, const double *rel, const double *beta2t,
                          double eps1, double eps2, double clip_threshold, double beta1, double weight_decay,
                          int scale_parameter, int unscaled, int threads) {
    job_t job = {.count = count, .g = g, .p = p, .m = m, .row = row, .col = col, .rms = rms, .rows = rows,
                 .cols = cols, .rel = rel, .beta2t = beta2t, .eps1 = eps1, .eps2 = eps2,
                 .clip_threshold = clip_threshold, .beta1 = beta1, .weight_decay = weight_decay,
                 .scale_parameter = scale_parameter, .unscaled = unscaled};
    job.threads = threads < 1 ? 1 : (threads > 64 ? 64 : threads);
    job.col_offset = malloc(sizeof(int64_t) * (size_t)(count + 1));
    if (job.col_offset == NULL) return -1;
    job.col_offset[0] = 0;
    job.widest = 0;
    for (int64_t k = 0; k < count; k++) {
        job.col_offset[k + 1] = job.col_offset[k] + cols[k];
        job.widest = cols[k] > job.widest ? cols[k] : job.widest;
    }
    size_t total_cols = (size_t)job.col_offset[count];
    job.col_sums = malloc(sizeof(double) * total_cols * (size_t)job.threads);
    job.weighted = malloc(sizeof(double) * total_cols * (size_t)job.threads);
    job.sq_p = malloc(sizeof(double) * (size_t)count * (size_t)job.threads);
    job.col_rsqrt = malloc(sizeof(float) * total_cols);
    job.float_sums = malloc(sizeof(float) * 2 * (size_t)job.widest * (size_t)job.threads);
    job.row_mean = malloc(sizeof(double) * (size_t)count * 3);
    int failed = !job.col_sums || !job.weighted || !job.sq_p || !job.col_rsqrt || !job.row_mean || !job.float_sums;
    if (!failed) {
        job.coef = job.row_mean + count;
        job.lr = job.row_mean + 2 * count;
        run_threads(&job, pass1);
        reduce(&job);
        run_threads(&job, pass2);
    }
    free(job.col_offset);
    free(job.col_sums);
    free(job.weighted);
    free(job.sq_p);
    free(job.col_rsqrt);
    free(job.float_sums);
    free(job.row_mean);
    return failed ? -1 : 0;
}
