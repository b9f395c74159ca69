/*
 * test_forward_legacy.c: the RWKV-4 and RWKV-5/6 WKV recurrences (wkv_legacy.c) against closed forms in double.
 *
 * Checked:
 * - v4: the output at every token equals the softmax-weighted average of rwkv-architectures.md §1.2
 *   (sum_{i<t} e^{-(t-1-i) e^w + k_i} v_i + e^{u+k_t} v_t) / (same weights), computed in double with its own shift,
 *   for keys up to +-200 (exp(200) overflows fp32: the max trick must keep everything finite); the first token from
 *   the empty state (pp = -1e30) gives exactly v; the final aa / bb is the average over all tokens without bonus.
 * - v5/v6: y and S after T tokens equal a double evaluation of y_j = sum_i r_i (u_i k_i v_j + S[i][j]),
 *   S <- diag(d) S + k v^T, with a constant decay (d_stride 0) and a per-token one, strided inside a wider row.
 * The full forward passes are tested from Python against the float64 reference (tests/test_engine_legacy.py).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wkv_legacy.h"

static int g_failures = 0;

#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                   \
            fprintf(stderr, __VA_ARGS__);                                                                          \
            fprintf(stderr, "\n");                                                                                 \
            g_failures++;                                                                                          \
        }                                                                                                          \
    } while (0)

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

/* Uniform in [lo, hi) from a xorshift generator (deterministic across platforms). */
static double uniform(double lo, double hi) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return lo + (hi - lo) * (double)(g_rng >> 11) / 9007199254740992.0;
}

/* Softmax-weighted average of v[0..n) with log-weights lw[0..n), in double with the largest weight factored out. */
static double weighted_average(const double *lw, const double *v, size_t n) {
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        mx = lw[i] > mx ? lw[i] : mx;
    }
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = exp(lw[i] - mx);
        num += e * v[i];
        den += e;
    }
    return num / den;
}

static void test_wkv4(double k_range) {
    enum { D = 24, T = 40 };
    float aa[D], bb[D], pp[D], w[D], u[D], k[T * D], v[T * D], y[T * D];
    for (size_t c = 0; c < D; c++) {
        aa[c] = bb[c] = 0.0f;
        pp[c] = -1e30f;
        /* Decays from "forgets at once" (w~ = -e^2) to "almost never" (w~ = -e^-8). */
        w[c] = -expf((float)uniform(-8.0, 2.0));
        u[c] = (float)uniform(-1.0, 1.0);
    }
    for (size_t i = 0; i < T * D; i++) {
        k[i] = (float)uniform(-k_range, k_range);
        v[i] = (float)uniform(-1.0, 1.0);
    }
    /*
     * Tolerance: pp holds the running log-scale in fp32, so each step's pp + w rounds by up to half an ulp of |k|
     * (1e-5 at 200), a relative error of the past's weight that adds up over the T steps; the official fp32 code
     * does the same.
     */
    const double tol = 1e-5 + (double)T * 2.0 * k_range * 0x1p-24;
    /* Two calls over channel ranges, as the thread pool splits them. */
    rwkvc_wkv4(aa, bb, pp, w, u, k, v, y, T, D, 0, 10);
    rwkvc_wkv4(aa, bb, pp, w, u, k, v, y, T, D, 10, D);

    double worst = 0.0;
    for (size_t c = 0; c < D; c++) {
        CHECK(y[c] == v[c], "v4 channel %zu: first output %g, expected exactly v = %g", c, y[c], v[c]);
        double lw[T], vv[T];
        for (size_t t = 0; t < T; t++) {
            for (size_t i = 0; i < t; i++) {
                lw[i] = (double)(t - 1 - i) * w[c] + k[i * D + c];
                vv[i] = v[i * D + c];
            }
            lw[t] = (double)u[c] + k[t * D + c];
            vv[t] = v[t * D + c];
            double want = weighted_average(lw, vv, t + 1);
            double err = fabs((double)y[t * D + c] - want);
            CHECK(isfinite(y[t * D + c]), "v4 channel %zu token %zu: output %g", c, t, y[t * D + c]);
            worst = err > worst ? err : worst;
        }
        /* The state after T tokens: aa / bb is the average over all tokens with decays only (no bonus). */
        for (size_t i = 0; i < T; i++) {
            lw[i] = (double)(T - 1 - i) * w[c] + k[i * D + c];
            vv[i] = v[i * D + c];
        }
        double want = weighted_average(lw, vv, T);
        CHECK(isfinite(aa[c]) && isfinite(bb[c]) && isfinite(pp[c]) && bb[c] > 0.0f,
              "v4 channel %zu: state aa %g bb %g pp %g", c, aa[c], bb[c], pp[c]);
        CHECK(fabs((double)aa[c] / bb[c] - want) <= tol, "v4 channel %zu: aa/bb %g, expected %g", c, aa[c] / bb[c],
              want);
    }
    CHECK(worst <= tol, "v4 (keys within +-%g): max |y - closed form| = %g > %g", k_range, worst, tol);
    printf("v4 keys within +-%g: max |y - closed form| = %.2g (bound %.2g)\n", k_range, worst, tol);
}

static void test_wkv5(int per_token_decay) {
    enum { N = 8, H = 3, D = H * N, T = 6 };
    static float S[H * N * N], r[T * D], k[T * D], v[T * D], d[T * D], u[D], y[T * D];
    static double S64[H * N * N];
    for (size_t i = 0; i < H * N * N; i++) {
        S[i] = (float)uniform(-1.0, 1.0);
        S64[i] = S[i];
    }
    for (size_t i = 0; i < T * D; i++) {
        r[i] = (float)uniform(-1.0, 1.0);
        k[i] = (float)uniform(-1.0, 1.0);
        v[i] = (float)uniform(-1.0, 1.0);
        d[i] = (float)exp(-exp(uniform(-6.0, 1.0)));
    }
    for (size_t i = 0; i < D; i++) {
        u[i] = (float)uniform(-1.0, 1.0);
    }
    size_t d_stride = per_token_decay ? D : 0;
    for (size_t h = 0; h < H; h++) {
        size_t o = h * N;
        rwkvc_wkv5(S + h * N * N, N, T, D, r + o, k + o, v + o, d + o, d_stride, u + o, y + o);
    }
    double worst_y = 0.0, worst_s = 0.0;
    for (size_t t = 0; t < T; t++) {
        for (size_t h = 0; h < H; h++) {
            double *Sh = S64 + h * N * N;
            const size_t o = t * D + h * N;
            const float *dt = d + (per_token_decay ? t * D : 0) + h * N;
            for (size_t j = 0; j < N; j++) {
                double yj = 0.0;
                for (size_t i = 0; i < N; i++) {
                    yj += (double)r[o + i] * ((double)u[h * N + i] * k[o + i] * v[o + j] + Sh[i * N + j]);
                }
                double err = fabs(yj - y[o + j]);
                worst_y = err > worst_y ? err : worst_y;
            }
            for (size_t i = 0; i < N; i++) {
                for (size_t j = 0; j < N; j++) {
                    Sh[i * N + j] = dt[i] * Sh[i * N + j] + (double)k[o + i] * v[o + j];
                }
            }
        }
    }
    for (size_t i = 0; i < H * N * N; i++) {
        double err = fabs(S64[i] - S[i]);
        worst_s = err > worst_s ? err : worst_s;
    }
    CHECK(worst_y <= 1e-5, "v5 (per-token decay %d): max |y - double| = %g", per_token_decay, worst_y);
    CHECK(worst_s <= 1e-5, "v5 (per-token decay %d): max |S - double| = %g", per_token_decay, worst_s);
}

int main(void) {
    test_wkv4(5.0);
    test_wkv4(200.0);
    test_wkv5(0);
    test_wkv5(1);
    printf("test_forward_legacy: %d failures\n", g_failures);
    return g_failures ? 1 : 0;
}
