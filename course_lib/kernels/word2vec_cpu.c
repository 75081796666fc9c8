/* word2vec's training loop on the CPU: word2vec.c's per-pair SGD, one chunk of sentences per call.
 *
 * Compiled on first use by course_lib/kernels/word2vec_cpu.py with the machine's C compiler
 * (gcc -O3 -march=native -shared) and called through ctypes, which releases the GIL: several
 * Python threads run this function at once on different chunks and update the shared tables
 * without locks, as word2vec.c's and gensim's threads do (Hogwild).
 *
 * The algorithm is that of word2vec.c and gensim's word2vec_inner.pyx, step for step:
 *
 *   for each sentence of the chunk:
 *     drop each token with probability 1 - keep(w)            (subsampling, before the windows)
 *     for each position i of what is left:
 *       r = window - (rand % window)                          (the reduced window, 1..window)
 *       skip-gram: for each j within r of i, j != i, the input vector of the context word
 *                  tokens[j] predicts the centre word tokens[i];
 *       CBOW:      the mean (cbow_mean=1) or sum of the input vectors within r of i predicts
 *                  tokens[i]; every context vector then gets the whole update neu1e
 *                  (divided by the number of context words when cbow_mean=0).
 *       "predicts" = hierarchical softmax along tokens[i]'s Huffman path, then negative
 *       sampling (label 1 for tokens[i], 0 for `negative` draws from unigram^0.75; a draw
 *       equal to tokens[i] is skipped).
 *
 * The learning rate is constant within a call: the caller computes it from the number of
 * words trained before the chunk, as word2vec.c does every 10,000 words and gensim once per
 * job. (The staircase matters: on a short run, interpolating within each job instead lowers
 * every step by half a job's decay and measurably lowers accuracy.)
 *
 * The sigmoid comes from a table of the caller (SIGMOID_TABLE_SIZE bins on [-MAX_EXP, MAX_EXP),
 * sigma at each bin's centre). Outside that range sigma is taken as 0 or 1, which is word2vec.c's
 * rule for negative sampling; gensim instead skips such a pair (no update at all), and
 * word2vec.c skips it in hierarchical softmax. Random numbers come from one SplitMix64 stream
 * per chunk, seeded by the caller, so a run with one thread is reproducible and
 * course_lib/kernels/word2vec_cpu.py's Python reference can replay it.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXP 6.0f

typedef struct {
    float *syn0;                 /* (V, D) input vectors, the word vectors */
    float *syn1neg;              /* (V, D) output vectors of negative sampling, or NULL */
    float *syn1;                 /* (V - 1, D) output vectors of the Huffman tree's inner nodes, or NULL */
    int64_t vocab_size;
    int32_t dim;
    int32_t sg, hs, negative, window, cbow_mean, shrink_windows;
    const uint32_t *keep_int;    /* (V,) keep a token if keep_int[w] >= a 32-bit random number; NULL: keep all */
    const uint32_t *noise_prob;  /* (V,) alias table of the noise distribution: keep bucket b if a 32-bit */
    const int32_t *noise_alias;  /*      random number < noise_prob[b], else take noise_alias[b] */
    const uint8_t *codes;        /* (V, max_code_length) Huffman codes, padded */
    const int32_t *points;       /* (V, max_code_length) inner nodes on each word's path, padded */
    const int32_t *code_lengths; /* (V,) */
    int32_t max_code_length;
    const float *sigmoid_table;  /* (table_size,) sigma(x) at the bin centres */
    const float *nll_table;      /* (table_size,) -log sigma(x) at the bin centres */
    int32_t table_size;
} w2v_model;

typedef struct {
    double loss;       /* summed -log likelihood of every training example */
    int64_t examples;  /* training examples: (context, centre) pairs for skip-gram, centres for CBOW */
    int64_t words;     /* tokens left after subsampling */
} w2v_stats;

/* SplitMix64 (Steele, Lea and Flood 2014), the top 32 bits used. word2vec.c and gensim use a
 * 48-bit linear congruential generator, whose low bits have short periods; `rand % V` reads
 * them. */
static inline uint32_t next_u32(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* A uniform integer in [0, n) from the top bits of a 32-bit draw (Lemire's multiply-shift). */
static inline uint32_t below(uint32_t n, uint64_t *state) {
    return (uint32_t)(((uint64_t)next_u32(state) * n) >> 32);
}

static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

static inline void axpy(float alpha, const float *restrict x, float *restrict y, int n) {
    for (int d = 0; d < n; d++) y[d] += alpha * x[d];
}

/* One logistic regression: h predicts `label` from sigma(out . h). Updates `out` in place and
 * adds the gradient for h (times the learning rate) to neu1e; adds the example's loss to *loss. */
static inline void logistic(const w2v_model *m, const float *restrict h, float *restrict out, float label,
                            float alpha, float *restrict neu1e, double *loss) {
    const int D = m->dim;
    const float f = dot(h, out, D);
    float sigma, nll;  /* nll = -log sigma(f): the loss if label = 1 */
    if (f >= MAX_EXP) {
        sigma = 1.0f;
        nll = log1pf(expf(-f));
    } else if (f <= -MAX_EXP) {
        sigma = 0.0f;
        nll = -f + log1pf(expf(f));
    } else {
        const int bin = (int)((f + MAX_EXP) * (m->table_size / (2.0f * MAX_EXP)));
        sigma = m->sigmoid_table[bin];
        nll = m->nll_table[bin];
    }
    *loss += label > 0.5f ? nll : nll + f;  /* -log sigma(-f) = -log sigma(f) + f */
    const float g = (label - sigma) * alpha;
    axpy(g, out, neu1e, D);
    axpy(g, h, out, D);
}

/* Hierarchical softmax, then negative sampling, for input h and target word `target`;
 * the gradient for h accumulates in neu1e (zeroed by the caller). */
static inline void predict(const w2v_model *m, const float *restrict h, int32_t target, float alpha,
                           float *restrict neu1e, uint64_t *rng, int32_t *negatives, double *loss) {
    const int D = m->dim;
    if (m->hs) {
        const uint8_t *code = m->codes + (int64_t)target * m->max_code_length;
        const int32_t *point = m->points + (int64_t)target * m->max_code_length;
        for (int b = 0; b < m->code_lengths[target]; b++)
            logistic(m, h, m->syn1 + (int64_t)point[b] * D, 1.0f - code[b], alpha, neu1e, loss);
    }
    if (m->negative) {
        for (int k = 0; k < m->negative; k++) {  /* draw them all first, so their rows can be fetched early */
            const uint32_t bucket = below((uint32_t)m->vocab_size, rng);
            negatives[k] = next_u32(rng) < m->noise_prob[bucket] ? (int32_t)bucket : m->noise_alias[bucket];
            __builtin_prefetch(m->syn1neg + (int64_t)negatives[k] * D);
        }
        logistic(m, h, m->syn1neg + (int64_t)target * D, 1.0f, alpha, neu1e, loss);
        for (int k = 0; k < m->negative; k++)
            if (negatives[k] != target)  /* a draw of the target itself is skipped */
                logistic(m, h, m->syn1neg + (int64_t)negatives[k] * D, 0.0f, alpha, neu1e, loss);
    }
}

/* Train on sentences [first, last) with learning rate alpha: tokens[starts[s] .. starts[s + 1])
 * is sentence s. */
int w2v_train_chunk(const w2v_model *m, const int32_t *tokens, const int64_t *starts, int64_t first,
                    int64_t last, float alpha, uint64_t seed, w2v_stats *stats) {
    const int D = m->dim;
    int64_t longest = 1;
    for (int64_t s = first; s < last; s++)
        if (starts[s + 1] - starts[s] > longest) longest = starts[s + 1] - starts[s];
    int32_t *kept = malloc(longest * sizeof(int32_t));
    int32_t *negatives = malloc((m->negative + 1) * sizeof(int32_t));
    float *neu1 = malloc(2 * D * sizeof(float));
    if (!kept || !negatives || !neu1) {
        free(kept), free(negatives), free(neu1);
        return -1;
    }
    float *neu1e = neu1 + D;
    uint64_t rng = seed;
    double loss = 0.0;
    int64_t examples = 0, words = 0;

    for (int64_t s = first; s < last; s++) {
        int64_t n = 0;
        for (int64_t t = starts[s]; t < starts[s + 1]; t++)  /* subsampling */
            if (!m->keep_int || m->keep_int[tokens[t]] >= next_u32(&rng)) kept[n++] = tokens[t];
        words += n;
        for (int64_t i = 0; i < n; i++) {
            const int64_t r = m->shrink_windows ? m->window - (int64_t)below((uint32_t)m->window, &rng)
                                                : m->window;
            const int64_t lo = i - r < 0 ? 0 : i - r, hi = i + r + 1 > n ? n : i + r + 1;
            if (m->sg) {
                for (int64_t j = lo; j < hi; j++) {
                    if (j == i) continue;
                    float *v = m->syn0 + (int64_t)kept[j] * D;  /* the context word's input vector */
                    memset(neu1e, 0, D * sizeof(float));
                    predict(m, v, kept[i], alpha, neu1e, &rng, negatives, &loss);
                    axpy(1.0f, neu1e, v, D);
                    examples++;
                }
            } else {
                const int count = (int)(hi - lo - 1);
                if (count == 0) continue;  /* a sentence of one word has no context */
                memset(neu1, 0, D * sizeof(float));
                for (int64_t j = lo; j < hi; j++)
                    if (j != i) axpy(1.0f, m->syn0 + (int64_t)kept[j] * D, neu1, D);
                if (m->cbow_mean)
                    for (int d = 0; d < D; d++) neu1[d] /= count;
                memset(neu1e, 0, D * sizeof(float));
                predict(m, neu1, kept[i], alpha, neu1e, &rng, negatives, &loss);
                const float share = m->cbow_mean ? 1.0f : 1.0f / count;
                for (int64_t j = lo; j < hi; j++)
                    if (j != i) axpy(share, neu1e, m->syn0 + (int64_t)kept[j] * D, D);
                examples++;
            }
        }
    }
    free(kept), free(negatives), free(neu1);
    stats->loss = loss;
    stats->examples = examples;
    stats->words = words;
    return 0;
}
