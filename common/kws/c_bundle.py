"""A keyword spotter's front end and detector as portable C99 (``--export-c``): the
code a device runs around the model, generated from the model's own recorded
feature configuration, input quantization, labels and detector settings.

``<stem>_frontend.{h,c}``: int16 samples in, as they arrive; each frame's MFCCs are
computed once (a mixed-radix FFT, combined only for the mel filters' bins; cos/sin,
window, mel and DCT tables generated here) into a ring of the last ``num_frames`` frames; at
each hop the model's int8 input (the gated mean removal applied over the window).
``<stem>_detector.{h,c}``: each hop's int8 logits (or float probabilities) in,
``stream.Listener``'s averaging, threshold, suppression and non-firing outputs.
``<stem>_listen_main.c``: a host program that reads a WAV and prints detections in
``kws_detect.py``'s format. No heap; libm for sqrtf and logf only.
"""
import re

import numpy as np

from common.errors import UserError
from common.kws import audio, negatives, stream

BUILD = ("cc -std=c99 -O2 -o {stem}_listen {stem}_listen_main.c {stem}_frontend.c "
         "{stem}_detector.c -lm")


# exp(-255 x scale) must not underflow a double: the softmax table's range
MAX_OUTPUT_SCALE = 2.0


def unsupported(config, settings, input_dtype, output_dtype, output_scale=0.0):
    """Why the C front end or detector cannot reproduce this model (None: it can)."""
    hop = stream.hop_samples(settings.hop_s, config.sample_rate)
    reasons = [
        (config.kind != "mfcc", f"its features are '{config.kind}' (the C front end "
                                "computes MFCCs only)"),
        (hop % config.frame_step, f"its hop of {hop} samples is not a whole number of "
                                  f"frame steps ({config.frame_step})"),
        ((config.clip_samples - config.frame_length) % config.frame_step,
         "its frames do not end at the window's end"),
        (config.frame_step > config.frame_length, "its frames leave gaps"),
        (input_dtype != np.int8, "its input is not int8"),
        (output_dtype != np.int8, "its output is not int8"),
        (output_scale > MAX_OUTPUT_SCALE,
         f"its output scale {output_scale:g} is over {MAX_OUTPUT_SCALE:g} (the softmax "
         "table's range)")]
    return next((why for bad, why in reasons if bad), None)


def check(config, settings, input_dtype=np.int8, output_dtype=np.int8, output_scale=0.0):
    """A UserError when the bundle cannot be written for this model."""
    why = unsupported(config, settings, input_dtype, output_dtype, output_scale)
    if why:
        raise UserError(f"--export-c cannot write the C front end for this model: {why}; "
                        "export without --export-c, or train a version with MFCC "
                        "features and an int8 input and output")


def _floats(values, per_line=8):
    """C float literals (repr of the float32 value: read back exactly)."""
    text = [f"{float(np.float32(v))!r}f".replace("inf", "INFINITY") for v in values]
    return ",\n    ".join(", ".join(text[i:i + per_line])
                          for i in range(0, len(text), per_line))


def _doubles(values, per_line=4):
    text = [f"{float(v)!r}" for v in values]
    return ",\n    ".join(", ".join(text[i:i + per_line])
                          for i in range(0, len(text), per_line))


def _ints(values, per_line=16):
    text = [str(int(v)) for v in values]
    return ",\n    ".join(", ".join(text[i:i + per_line])
                          for i in range(0, len(text), per_line))


def _fill(template, **values):
    """``@NAME@`` in ``template`` replaced by ``values['NAME']``."""
    return re.sub(r"@(\w+)@", lambda m: str(values[m.group(1)]), template)


def mel_bins(config):
    """``(first bin, end bin, lower band of each bin, its weight, the next band's
    weight)``: the bins any mel filter weighs (the rest are never computed); each
    weighs into at most two neighbouring bands (HTK triangles overlap by half)."""
    bins = config.fft_length // 2 + 1
    matrix = audio.mel_matrix(config.num_mel_bins, bins, config.sample_rate,
                              config.lower_hz, config.upper_hz)
    used = np.flatnonzero(matrix.any(axis=1))
    first, end = int(used[0]), int(used[-1]) + 1
    band, low, high = [], [], []
    for k in range(first, end):
        nonzero = np.flatnonzero(matrix[k])
        b = int(nonzero[0]) if len(nonzero) else 0
        if len(nonzero) > 2 or (len(nonzero) == 2 and nonzero[1] != b + 1):
            raise UserError("--export-c cannot write the C front end for this model: "
                            "its mel filters overlap by more than half")
        band.append(b)
        low.append(matrix[k, b])
        high.append(matrix[k, b + 1] if b + 1 < config.num_mel_bins else 0.0)
    return first, end, band, low, high


def softmax_table(scale, zero_point):
    """exp(z(q) - z(127)) for each int8 logit q, z(q) = float32((q - zp) * scale) as
    ``runtime.dequantize`` computes it: softmax without exp on the device."""
    q = np.arange(-128, 128, dtype=np.float32)
    z = ((q - np.float32(zero_point)) * np.float32(scale)).astype(np.float64)
    return np.exp(z - z[-1])


def bundle(stem, config, settings, labels, input_quantization, output_quantization):
    """``{file name: bytes}``: the front end, the detector and the host program."""
    name = re.sub(r"\W", "_", stem)
    up = name.upper()
    first, end, band, low, high = mel_bins(config)
    n = np.arange(config.fft_length)
    angle = 2 * np.pi * n / config.fft_length
    window = audio.hann_periodic(config.frame_length).astype(np.float64) / 32768.0
    dct = audio.dct_matrix(config.num_mel_bins, config.num_mfccs)
    hops = settings.hops(settings.average_s)
    sub_length = config.fft_length & -config.fft_length  # its largest power-of-two factor
    bits = sub_length.bit_length() - 1
    bit_reverse = [int(f"{j:0{bits}b}"[::-1], 2) if bits else 0 for j in range(sub_length)]
    keyword = [negatives.is_keyword(label) for label in labels]
    values = dict(
        NAME=name, UP=up, STEM=stem,
        RATE=config.sample_rate, FRAME_LENGTH=config.frame_length,
        FRAME_STEP=config.frame_step, FFT_LENGTH=config.fft_length,
        NUM_FRAMES=config.num_frames, NUM_MFCCS=config.num_mfccs,
        NUM_MEL=config.num_mel_bins, BIN_FIRST=first, BIN_END=end,
        SUB=config.fft_length // sub_length, SUB_LENGTH=sub_length,
        BIT_REVERSE=_ints(bit_reverse),
        HOP=stream.hop_samples(settings.hop_s, config.sample_rate),
        IN_SCALE=f"{float(np.float32(input_quantization[0]))!r}f",
        IN_ZERO=int(input_quantization[1]),
        REMOVE_MEAN=int(config.remove_mean), GATE_DB=float(config.mean_gate_db),
        LEVEL_DIV=repr(float(np.sqrt(2.0 * config.num_mel_bins))),
        LEVEL_MUL=repr(float(20.0 / np.log(10.0))),
        WINDOW=_floats(window), COS=_floats(np.cos(angle)), SIN=_floats(np.sin(angle)),
        MEL_BAND=_ints(band), MEL_LOW=_floats(low), MEL_HIGH=_floats(high),
        DCT=_floats(dct.reshape(-1), config.num_mfccs),
        NUM_LABELS=len(labels), SPAN=hops, MIN_GAP=stream._min_gap(settings),
        THRESHOLD=f"{float(np.float32(settings.threshold))!r}f",
        HOP_S=repr(float(settings.hop_s)), AVERAGE_S=f"{settings.average_s:g}",
        THRESHOLD_TEXT=f"{settings.threshold:g}",
        SUPPRESSION_S=f"{settings.suppression_s:g}",
        KEYWORD=_ints(keyword),
        LABELS=",\n    ".join('"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'
                              for label in labels),
        EXP=_doubles(softmax_table(*output_quantization)),
        FEATURES="\n".join(f" *   {line}" for line in config.describe()),
        BUILD=BUILD.format(stem=stem))
    return {f"{stem}_frontend.h": _fill(FRONTEND_H, **values).encode(),
            f"{stem}_frontend.c": _fill(FRONTEND_C, **values).encode(),
            f"{stem}_detector.h": _fill(DETECTOR_H, **values).encode(),
            f"{stem}_detector.c": _fill(DETECTOR_C, **values).encode(),
            f"{stem}_listen_main.c": _fill(LISTEN_MAIN_C, **values).encode()}


FRONTEND_H = """\
/* @STEM@ front end: generated by tinyml-pipelines (--export-c); do not edit.
 * What it computes (the model's recorded feature configuration):
@FEATURES@
 * Incremental: push int16 samples as they arrive; each frame is computed once,
 * when its last sample comes; every @HOP@ samples (a hop) the model's input is
 * ready. Windows end at each hop; before the first samples the audio is zeros.
 *
 *   @NAME@_frontend_t fe;  int8_t input[@UP@_INPUT_SIZE];
 *   @NAME@_frontend_init(&fe);
 *   while (count > 0) {
 *       size_t used = @NAME@_frontend_push(&fe, samples, count);
 *       samples += used;  count -= used;
 *       if (@NAME@_frontend_input(&fe, input)) { ...run the model on input... }
 *   }
 */
#ifndef @UP@_FRONTEND_H_
#define @UP@_FRONTEND_H_

#ifdef __cplusplus  /* a TFLM firmware is C++ */
extern "C" {
#endif

#include <stddef.h>
#include <stdint.h>

#define @UP@_SAMPLE_RATE @RATE@
#define @UP@_HOP_SAMPLES @HOP@
#define @UP@_FRAME_LENGTH @FRAME_LENGTH@
#define @UP@_FRAME_STEP @FRAME_STEP@
#define @UP@_NUM_FRAMES @NUM_FRAMES@
#define @UP@_NUM_FEATURES @NUM_MFCCS@
#define @UP@_INPUT_SIZE (@UP@_NUM_FRAMES * @UP@_NUM_FEATURES)
#define @UP@_INPUT_SCALE @IN_SCALE@
#define @UP@_INPUT_ZERO_POINT @IN_ZERO@

typedef struct {
    int16_t samples[@UP@_FRAME_LENGTH];  /* the next frame's samples, oldest first */
    int filled;                          /* how many of them have come */
    float features[@UP@_NUM_FRAMES][@UP@_NUM_FEATURES];  /* ring: last frames' MFCCs */
    int oldest;                          /* ring index of the window's first frame */
    int since_hop;                       /* samples pushed since the last hop */
    int hop_ready;                       /* a hop ended: the input can be read */
} @NAME@_frontend_t;

void @NAME@_frontend_init(@NAME@_frontend_t *fe);

/* Takes up to count samples; stops after the one that ends a hop (so no hop is
 * missed). Returns how many it took. */
size_t @NAME@_frontend_push(@NAME@_frontend_t *fe, const int16_t *samples,
                             size_t count);

/* When a hop has ended since the last call: writes the model's int8 input (rows =
 * frames, oldest first) and returns 1; else returns 0 and writes nothing. */
int @NAME@_frontend_input(@NAME@_frontend_t *fe, int8_t *input);

/* The window's float features before quantization (the same rows); for checks. */
void @NAME@_frontend_features(const @NAME@_frontend_t *fe, float *features);

#ifdef __cplusplus
}
#endif

#endif  /* @UP@_FRONTEND_H_ */
"""

FRONTEND_C = """\
/* @STEM@ front end: generated by tinyml-pipelines (--export-c); do not edit. */
#include "@STEM@_frontend.h"

#include <math.h>
#include <string.h>

#define FFT_LENGTH @FFT_LENGTH@
#define NUM_MEL @NUM_MEL@
#define BIN_FIRST @BIN_FIRST@  /* the bins the mel filters weigh: [BIN_FIRST, BIN_END) */
#define BIN_END @BIN_END@
#define REMOVE_MEAN @REMOVE_MEAN@
#define GATE_DB @GATE_DB@  /* mean over the frames within this of the loudest (0: all) */

/* periodic Hann window / 32768: int16 -> the float signal, windowed, in one product */
static const float kWindow[@UP@_FRAME_LENGTH] = {
    @WINDOW@};
static const float kCos[FFT_LENGTH] = {
    @COS@};
static const float kSin[FFT_LENGTH] = {
    @SIN@};
/* each bin weighs into band kMelBand[k] and the next (HTK triangles overlap by half) */
static const unsigned short kMelBand[BIN_END - BIN_FIRST] = {
    @MEL_BAND@};
static const float kMelLow[BIN_END - BIN_FIRST] = {
    @MEL_LOW@};
static const float kMelHigh[BIN_END - BIN_FIRST] = {
    @MEL_HIGH@};
/* DCT-II as tf.signal.mfccs_from_log_mel_spectrograms: [band][coefficient] */
static const float kDct[NUM_MEL * @UP@_NUM_FEATURES] = {
    @DCT@};

/* The FFT of length FFT_LENGTH = SUB x SUB_LENGTH (SUB odd, SUB_LENGTH a power of
 * two): SUB radix-2 FFTs of the samples n = SUB j + r, combined only for the bins the
 * mel filters weigh. SUB_LENGTH's twiddles are every SUB-th entry of kCos/kSin. */
#define SUB @SUB@
#define SUB_LENGTH @SUB_LENGTH@
static const unsigned short kBitReverse[SUB_LENGTH] = {
    @BIT_REVERSE@};

/* in place, its input in bit-reversed order */
static void sub_fft(float *re, float *im) {
    int size, start, j;
    for (size = 2; size <= SUB_LENGTH; size *= 2) {
        int half = size / 2, stride = FFT_LENGTH / size;
        for (start = 0; start < SUB_LENGTH; start += size) {
            for (j = 0; j < half; ++j) {
                /* e^(-2 pi i j / size) */
                float wr = kCos[j * stride], wi = -kSin[j * stride];
                int a = start + j, b = start + j + half;
                float tr = wr * re[b] - wi * im[b], ti = wr * im[b] + wi * re[b];
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
    }
}

/* One frame's MFCCs: |FFT| of the windowed frame, mel filters, ln(x + 1e-6), DCT. */
static void frame_features(const int16_t *samples, float *out) {
    float bin_re[BIN_END - BIN_FIRST], bin_im[BIN_END - BIN_FIRST];
    float re[SUB_LENGTH], im[SUB_LENGTH];
    float mel[NUM_MEL + 1];  /* + 1: the last band's upper neighbour, never read */
    int r, j, k, b, c;
    for (k = 0; k < BIN_END - BIN_FIRST; ++k) bin_re[k] = bin_im[k] = 0.0f;
    for (r = 0; r < SUB; ++r) {
        for (j = 0; j < SUB_LENGTH; ++j) {
            int n = SUB * j + r;  /* beyond the frame: the FFT's zero padding */
            re[kBitReverse[j]] =
                n < @UP@_FRAME_LENGTH ? (float)samples[n] * kWindow[n] : 0.0f;
            im[kBitReverse[j]] = 0.0f;
        }
        sub_fft(re, im);
        for (k = BIN_FIRST; k < BIN_END; ++k) {  /* X[k] += e^(-2 pi i r k/N) Y_r[k] */
            int at = (r * k) % FFT_LENGTH;
            float y_re = re[k % SUB_LENGTH], y_im = im[k % SUB_LENGTH];
            bin_re[k - BIN_FIRST] += y_re * kCos[at] + y_im * kSin[at];
            bin_im[k - BIN_FIRST] += y_im * kCos[at] - y_re * kSin[at];
        }
    }
    for (b = 0; b <= NUM_MEL; ++b) mel[b] = 0.0f;
    for (k = BIN_FIRST; k < BIN_END; ++k) {
        float x = bin_re[k - BIN_FIRST], y = bin_im[k - BIN_FIRST];
        float magnitude = sqrtf(x * x + y * y);
        mel[kMelBand[k - BIN_FIRST]] += magnitude * kMelLow[k - BIN_FIRST];
        mel[kMelBand[k - BIN_FIRST] + 1] += magnitude * kMelHigh[k - BIN_FIRST];
    }
    for (b = 0; b < NUM_MEL; ++b) mel[b] = logf(mel[b] + 1e-6f);
    for (c = 0; c < @UP@_NUM_FEATURES; ++c) {
        float sum = 0.0f;
        for (b = 0; b < NUM_MEL; ++b) sum += mel[b] * kDct[b * @UP@_NUM_FEATURES + c];
        out[c] = sum;
    }
}

void @NAME@_frontend_init(@NAME@_frontend_t *fe) {
    int r;
    memset(fe, 0, sizeof *fe);
    /* before the audio: zeros, so every frame of the first window is the silent one */
    frame_features(fe->samples, fe->features[0]);
    for (r = 1; r < @UP@_NUM_FRAMES; ++r)
        memcpy(fe->features[r], fe->features[0], sizeof fe->features[0]);
    /* the first frame ending at a hop's step starts frame_length - frame_step early */
    fe->filled = @UP@_FRAME_LENGTH - @UP@_FRAME_STEP;
}

size_t @NAME@_frontend_push(@NAME@_frontend_t *fe, const int16_t *samples,
                             size_t count) {
    size_t used = 0;
    while (used < count) {
        fe->samples[fe->filled++] = samples[used++];
        if (fe->filled == @UP@_FRAME_LENGTH) {  /* a frame is complete: compute it once */
            frame_features(fe->samples, fe->features[fe->oldest]);
            fe->oldest = (fe->oldest + 1) % @UP@_NUM_FRAMES;
            memmove(fe->samples, fe->samples + @UP@_FRAME_STEP,
                    (@UP@_FRAME_LENGTH - @UP@_FRAME_STEP) * sizeof fe->samples[0]);
            fe->filled -= @UP@_FRAME_STEP;
        }
        if (++fe->since_hop == @UP@_HOP_SAMPLES) {
            fe->since_hop = 0;
            fe->hop_ready = 1;
            break;
        }
    }
    return used;
}

#if REMOVE_MEAN
/* each column less its mean over the frames within GATE_DB of the loudest (over all
 * of them with GATE_DB 0); a frame's level in dB from its first MFCC, in double as
 * numpy computes it */
static void remove_mean(float *features) {
    double level[@UP@_NUM_FRAMES], loudest = 0.0;
    float mean[@UP@_NUM_FEATURES];
    int r, c, count = 0;
    for (r = 0; r < @UP@_NUM_FRAMES; ++r) {
        level[r] = (double)features[r * @UP@_NUM_FEATURES] / @LEVEL_DIV@ * @LEVEL_MUL@;
        if (r == 0 || level[r] > loudest) loudest = level[r];
    }
    for (c = 0; c < @UP@_NUM_FEATURES; ++c) mean[c] = 0.0f;
    for (r = 0; r < @UP@_NUM_FRAMES; ++r) {
        if (GATE_DB > 0 && !(level[r] >= loudest - GATE_DB)) continue;
        for (c = 0; c < @UP@_NUM_FEATURES; ++c)
            mean[c] += features[r * @UP@_NUM_FEATURES + c];
        ++count;
    }
    for (c = 0; c < @UP@_NUM_FEATURES; ++c) mean[c] /= (float)count;
    for (r = 0; r < @UP@_NUM_FRAMES; ++r)
        for (c = 0; c < @UP@_NUM_FEATURES; ++c)
            features[r * @UP@_NUM_FEATURES + c] -= mean[c];
}
#endif

void @NAME@_frontend_features(const @NAME@_frontend_t *fe, float *features) {
    int r;
    for (r = 0; r < @UP@_NUM_FRAMES; ++r)  /* the ring, oldest frame first */
        memcpy(features + r * @UP@_NUM_FEATURES,
               fe->features[(fe->oldest + r) % @UP@_NUM_FRAMES], sizeof fe->features[0]);
#if REMOVE_MEAN
    remove_mean(features);
#endif
}

/* round half to even, as numpy's round, then clip to int8 */
static int8_t quantize(float x) {
    float v = x / @UP@_INPUT_SCALE + (float)@UP@_INPUT_ZERO_POINT;
    float rest;
    long whole;
    if (!(v > -200.0f)) return -128;  /* NaN too */
    if (v > 200.0f) return 127;
    whole = (long)v;  /* toward zero */
    rest = v - (float)whole;
    if (rest > 0.5f || (rest == 0.5f && (whole & 1))) ++whole;
    if (rest < -0.5f || (rest == -0.5f && (whole & 1))) --whole;
    return (int8_t)(whole < -128 ? -128 : whole > 127 ? 127 : whole);
}

int @NAME@_frontend_input(@NAME@_frontend_t *fe, int8_t *input) {
    float features[@UP@_INPUT_SIZE];
    int i;
    if (!fe->hop_ready) return 0;
    fe->hop_ready = 0;
    @NAME@_frontend_features(fe, features);
    for (i = 0; i < @UP@_INPUT_SIZE; ++i) input[i] = quantize(features[i]);
    return 1;
}
"""

DETECTOR_H = """\
/* @STEM@ detector: generated by tinyml-pipelines (--export-c); do not edit.
 * kws_detect.py's rules with the model's settings: each hop's probabilities
 * (softmax of the logits) averaged over the last @SPAN@ hops (@AVERAGE_S@ s, fewer at
 * the start); fires when the best keyword's average reaches @THRESHOLD_TEXT@, at most
 * once every @MIN_GAP@ hops (suppression @SUPPRESSION_S@ s); outputs that are not
 * keywords (background, unknown speech) never fire. The first of equal scores wins.
 *
 * On a device the model between the front end and the detector is TFLM's Invoke:
 *
 *   tflite::MicroInterpreter interpreter(model, resolver, arena, k...ArenaSize);
 *   interpreter.AllocateTensors();
 *   ...when @NAME@_frontend_input(&fe, interpreter.input(0)->data.int8) returns 1:
 *   if (interpreter.Invoke() == kTfLiteOk &&
 *       @NAME@_detector_push_int8(&det, interpreter.output(0)->data.int8, &hit))
 *       printf("%.2f  %s  %.2f\\n", hit.time_s, @NAME@_labels[hit.label], hit.score);
 */
#ifndef @UP@_DETECTOR_H_
#define @UP@_DETECTOR_H_

#ifdef __cplusplus  /* a TFLM firmware is C++ */
extern "C" {
#endif

#include <stdint.h>

#define @UP@_NUM_LABELS @NUM_LABELS@
#define @UP@_AVERAGE_HOPS @SPAN@
#define @UP@_MIN_GAP_HOPS @MIN_GAP@
#define @UP@_THRESHOLD @THRESHOLD@
#define @UP@_HOP_SECONDS @HOP_S@

extern const char *const @NAME@_labels[@UP@_NUM_LABELS];

typedef struct {
    float history[@UP@_AVERAGE_HOPS][@UP@_NUM_LABELS];  /* ring: last hops' probabilities */
    int kept;          /* rows of history in use */
    int next;          /* where the next row goes */
    long hops_done;    /* hops seen */
    long last_fired;   /* hop of the last detection, -1: none yet */
} @NAME@_detector_t;

typedef struct {
    int label;      /* index into @NAME@_labels */
    float score;    /* the averaged probability */
    double time_s;  /* the end of the hop it fired on, from the start of the audio */
    long hop;       /* that hop's index, from 0 */
} @NAME@_detection_t;

void @NAME@_detector_init(@NAME@_detector_t *det);

/* One hop's int8 logits (the model's output tensor). Returns 1 and fills *hit when
 * a keyword fires on this hop, else 0. */
int @NAME@_detector_push_int8(@NAME@_detector_t *det, const int8_t *logits,
                               @NAME@_detection_t *hit);

/* The same with the hop's probabilities already computed (float). */
int @NAME@_detector_push_probs(@NAME@_detector_t *det, const float *probs,
                                @NAME@_detection_t *hit);

#ifdef __cplusplus
}
#endif

#endif  /* @UP@_DETECTOR_H_ */
"""

DETECTOR_C = """\
/* @STEM@ detector: generated by tinyml-pipelines (--export-c); do not edit. */
#include "@STEM@_detector.h"

#include <string.h>

const char *const @NAME@_labels[@UP@_NUM_LABELS] = {
    @LABELS@};
/* 1: may fire; 0: background or unknown speech */
static const unsigned char kKeyword[@UP@_NUM_LABELS] = {
    @KEYWORD@};
/* exp(z(q) - z(127)), z(q) = (q - zero point) * scale: softmax without exp */
static const double kExp[256] = {
    @EXP@};

void @NAME@_detector_init(@NAME@_detector_t *det) {
    memset(det, 0, sizeof *det);
    det->last_fired = -1;
}

int @NAME@_detector_push_int8(@NAME@_detector_t *det, const int8_t *logits,
                               @NAME@_detection_t *hit) {
    float probs[@UP@_NUM_LABELS];
    double sum = 0.0;
    int i;
    for (i = 0; i < @UP@_NUM_LABELS; ++i) sum += kExp[logits[i] + 128];
    for (i = 0; i < @UP@_NUM_LABELS; ++i) probs[i] = (float)(kExp[logits[i] + 128] / sum);
    return @NAME@_detector_push_probs(det, probs, hit);
}

int @NAME@_detector_push_probs(@NAME@_detector_t *det, const float *probs,
                                @NAME@_detection_t *hit) {
    double total[@UP@_NUM_LABELS];
    long k = det->hops_done++;
    int i, r, best = -1;
    float best_score = -1.0f;
    memcpy(det->history[det->next], probs, sizeof det->history[0]);
    det->next = (det->next + 1) % @UP@_AVERAGE_HOPS;
    if (det->kept < @UP@_AVERAGE_HOPS) ++det->kept;
    for (i = 0; i < @UP@_NUM_LABELS; ++i) total[i] = 0.0;
    for (r = 0; r < det->kept; ++r) {  /* oldest first, in double, as the Python */
        const float *row = det->history[(det->next - det->kept + r + @UP@_AVERAGE_HOPS)
                                        % @UP@_AVERAGE_HOPS];
        for (i = 0; i < @UP@_NUM_LABELS; ++i) total[i] += row[i];
    }
    for (i = 0; i < @UP@_NUM_LABELS; ++i) {
        float score = kKeyword[i] ? (float)(total[i] / det->kept) : -1.0f;
        if (best < 0 || score > best_score) best = i, best_score = score;
    }
    if (!(best_score >= @UP@_THRESHOLD)) return 0;
    if (det->last_fired >= 0 && k - det->last_fired < @UP@_MIN_GAP_HOPS) return 0;
    det->last_fired = k;
    hit->label = best;
    hit->score = best_score;
    hit->hop = k;
    hit->time_s = (double)(k + 1) * @UP@_HOP_SECONDS;
    return 1;
}
"""

LISTEN_MAIN_C = """\
/* @STEM@ host program: generated by tinyml-pipelines (--export-c); do not edit.
 * Reads a 16-bit PCM mono WAV at @RATE@ Hz, runs the front end -> the model -> the
 * detector, and prints each detection as kws_detect.py does ("time  label  score").
 * The model is a callback; here (no TFLM on the host) it is a file of int8 outputs:
 *
 *   @BUILD@
 *   ./@STEM@_listen audio.wav --inputs inputs.bin    # each hop's int8 model input
 *   (run the model on each @UP@_INPUT_SIZE-byte row, e.g. with TFLM's Python
 *    interpreter: python docs/c_bundle_check.py --run-model MODEL inputs.bin outputs.bin)
 *   ./@STEM@_listen audio.wav --outputs outputs.bin  # each hop's int8 model output
 *
 * On a device, model() is TFLM's Invoke (see @STEM@_detector.h).
 * Exit status: 0 done (a truncated WAV is read as far as it goes, with a warning);
 * 2 bad input (not a 16-bit PCM mono WAV at @RATE@ Hz, unreadable files).
 */
#include <stdio.h>
#include <string.h>

#include "@STEM@_detector.h"
#include "@STEM@_frontend.h"

#define EXIT_BAD_INPUT 2

static FILE *model_file;  /* --inputs: written; --outputs: read */
static int writing_inputs;

/* The model callback: input -> output; 0 when it cannot run. */
static int model(const int8_t *input, int8_t *output) {
    if (writing_inputs)
        return fwrite(input, 1, @UP@_INPUT_SIZE, model_file) == @UP@_INPUT_SIZE;
    return fread(output, 1, @UP@_NUM_LABELS, model_file) == @UP@_NUM_LABELS;
}

static unsigned long le(const unsigned char *b, int bytes) {
    unsigned long v = 0;
    while (bytes-- > 0) v = (v << 8) | b[bytes];
    return v;
}

static int fail(const char *path, const char *why) {
    fprintf(stderr, "error: %s %s\\n", path, why);
    return EXIT_BAD_INPUT;
}

/* Positions f at the first sample; *size: the data chunk's bytes (0: to the end).
 * Returns 0, or an exit status after printing one line. */
static int read_header(FILE *f, const char *path, unsigned long *size) {
    unsigned char b[40];
    int have_fmt = 0;
    if (fread(b, 1, 12, f) != 12 || memcmp(b, "RIFF", 4) || memcmp(b + 8, "WAVE", 4))
        return fail(path, "is not a WAV file (no RIFF/WAVE header)");
    for (;;) {
        unsigned long chunk, keep;
        if (fread(b, 1, 8, f) != 8)
            return fail(path, "is not a readable WAV file (no data chunk)");
        chunk = le(b + 4, 4);
        if (!memcmp(b, "data", 4)) {
            if (!have_fmt)
                return fail(path, "is not a readable WAV file (data before fmt)");
            *size = (chunk == 0 || chunk == 0xFFFFFFFFUL) ? 0 : chunk;  /* streamed */
            return 0;
        }
        keep = !memcmp(b, "fmt ", 4) ? (chunk < 40 ? chunk : 40) : 0;
        if (keep) {
            unsigned long tag;
            if (keep < 16 || fread(b, 1, keep, f) != keep)
                return fail(path, "is not a readable WAV file (its fmt chunk is cut)");
            tag = le(b, 2);
            if (tag == 0xFFFE && (keep < 26 || le(b + 24, 2) != 1)) tag = 0;
            if ((tag != 1 && tag != 0xFFFE) || le(b + 14, 2) != 16)
                return fail(path, "is not 16-bit PCM; give a 16-bit PCM mono WAV");
            if (le(b + 2, 2) != 1)
                return fail(path, "is not mono; give a 16-bit PCM mono WAV");
            if (le(b + 4, 4) != @UP@_SAMPLE_RATE)
                return fail(path, "is not sampled at @RATE@ Hz; resample it to @RATE@ Hz");
            have_fmt = 1;
        }
        for (chunk = chunk + (chunk & 1) - keep; chunk > 0;) {  /* skip the rest */
            unsigned long step = chunk < sizeof b ? chunk : sizeof b;
            if (fread(b, 1, step, f) != step)
                return fail(path, "is not a readable WAV file (it ends inside a chunk)");
            chunk -= step;
        }
    }
}

int main(int argc, char **argv) {
    static @NAME@_frontend_t fe;
    static @NAME@_detector_t det;
    int8_t input[@UP@_INPUT_SIZE], output[@UP@_NUM_LABELS];
    unsigned char bytes[2 * 512];
    int16_t samples[512];
    unsigned long size, read_bytes = 0;
    long hops = 0, found = 0;
    FILE *wav;
    int status;
    if (argc != 4 || (strcmp(argv[2], "--inputs") && strcmp(argv[2], "--outputs"))) {
        fprintf(stderr, "usage: %s AUDIO.wav --inputs FILE | --outputs FILE\\n", argv[0]);
        return EXIT_BAD_INPUT;
    }
    writing_inputs = !strcmp(argv[2], "--inputs");
    if (!(wav = fopen(argv[1], "rb"))) return fail(argv[1], "cannot be opened");
    if ((status = read_header(wav, argv[1], &size)) != 0) return status;
    if (!(model_file = fopen(argv[3], writing_inputs ? "wb" : "rb")))
        return fail(argv[3], "cannot be opened");
    @NAME@_frontend_init(&fe);
    @NAME@_detector_init(&det);
    for (;;) {
        size_t want = sizeof bytes, got, n, i, at = 0;
        if (size && size - read_bytes < want) want = size - read_bytes;
        if (want == 0 || (got = fread(bytes, 1, want, wav)) == 0) break;
        read_bytes += got;
        n = got / 2;  /* a last half sample is dropped */
        for (i = 0; i < n; ++i) samples[i] = (int16_t)le(bytes + 2 * i, 2);
        while (at < n) {
            at += @NAME@_frontend_push(&fe, samples + at, n - at);
            if (@NAME@_frontend_input(&fe, input)) {
                @NAME@_detection_t hit;
                if (!model(input, output))
                    return fail(argv[3], writing_inputs
                                             ? "cannot be written"
                                             : "holds fewer hops than the audio");
                ++hops;
                if (!writing_inputs && @NAME@_detector_push_int8(&det, output, &hit)) {
                    printf("%.2f  %s  %.2f\\n", hit.time_s, @NAME@_labels[hit.label],
                           (double)hit.score);
                    ++found;
                }
            }
        }
    }
    if (size && read_bytes < size)
        fprintf(stderr, "warning: %s is truncated: its header promises %lu samples, it "
                "holds %lu; read them all\\n", argv[1], size / 2, read_bytes / 2);
    if (fclose(model_file) != 0) return fail(argv[3], "cannot be written");
    if (writing_inputs)
        fprintf(stderr, "processed %.1f s of audio; wrote %ld hops' inputs to %s\\n",
                hops * @UP@_HOP_SECONDS, hops, argv[3]);
    else
        fprintf(stderr, "processed %.1f s of audio; %ld detection%s (threshold "
                "@THRESHOLD_TEXT@, averaged over @AVERAGE_S@ s)\\n",
                hops * @UP@_HOP_SECONDS, found, found == 1 ? "" : "s");
    return 0;
}
"""


def check_recipe(recipe):
    """Before training: a UserError when the bundle could not be written for what
    this recipe trains (its features, the default hop, its quantization)."""
    dtype = np.int8 if recipe.quantization == "int8" else np.float32
    check(recipe.features, stream.DetectorSettings(), dtype, dtype)


def files_for(stem, tflite_bytes, path="the model"):
    """The bundle for a keyword spotter, from what the model records (features,
    labels, detector settings, input and output quantization); a UserError, and
    nothing made, when the C code cannot reproduce it."""
    from common.tflite import tflite_file
    from common.tflite.runtime import Runner
    from common.kws import features
    config = features.read_features(tflite_bytes, path)
    settings = stream.recorded_settings(tflite_bytes, path) or stream.DetectorSettings()
    runner = Runner(tflite_bytes, num_threads=1)
    check(config, settings, runner.input["dtype"], runner.output["dtype"],
          float(runner.output["quantization"][0]))
    if tuple(runner.input_shape[1:]) != tuple(config.shape):
        raise UserError(f"{path!r} takes input {list(runner.input_shape)}, but its "
                        f"recorded features are {list(config.shape)}: a damaged model")
    return bundle(stem, config, settings, tflite_file.read_labels(tflite_bytes, path),
                  runner.input["quantization"], runner.output["quantization"])
