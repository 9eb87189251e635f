/* SPDX-License-Identifier: MIT */
/**
 * @file codec.h
 * @brief Framing codecs: how messages are delimited on a byte stream.
 *
 * A tc_codec is a small value type (copy it freely) that describes one of
 * four framings:
 *
 * | kind                       | a frame is                                   | payload            |
 * |----------------------------|----------------------------------------------|--------------------|
 * | TC_CODEC_RAW               | whatever bytes are available (up to the max) | the same bytes     |
 * | TC_CODEC_DELIMITED         | bytes up to and including a delimiter        | without the delimiter |
 * | TC_CODEC_LENGTH_PREFIXED   | a 1, 2, 4 or 8-byte length, then that many bytes | after the prefix |
 * | TC_CODEC_CUSTOM            | what the user's scan callback says           | the whole frame    |
 *
 * Every codec has a maximum payload size, its max_frame field (0 means
 * TC_CODEC_DEFAULT_MAX_FRAME, 1 MiB). A zero-initialised tc_codec (or
 * TC_CODEC_INIT) is the raw codec with the 1 MiB default, so a config
 * written as `= {0}` gets raw framing.
 *
 * The functions here are pure: no I/O, no allocation, no global state. The
 * same tc_codec_scan() serves the blocking channel (tc_conn_read_frame()) and
 * any event loop: feed it the bytes buffered so far and it answers
 * "need more", "a frame of N bytes" or "invalid".
 *
 * @code
 * tc_codec len32;
 * tc_codec_length_prefixed(&len32, 4, TC_BIG_ENDIAN);
 * tc_codec_set_max_frame(&len32, 64 * 1024);
 * size_t off, plen, flen;
 * int rc = tc_codec_scan(&len32, buf, n, &off, &plen, &flen);
 * if (rc == 1) { handle(buf + off, plen); consume(flen); }
 * else if (rc == 0) { read more }
 * else { close the connection: rc is TC_ETOOBIG or TC_EBADFRAME }
 * @endcode
 *
 * @par Thread safety
 * All functions are safe from any thread; a tc_codec is not modified by
 * tc_codec_scan() or tc_codec_encode(). A custom scan callback must itself be
 * safe to call from every thread that scans with the codec.
 */
#ifndef TCPCHAN_CODEC_H
#define TCPCHAN_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Longest delimiter of a TC_CODEC_DELIMITED codec, in bytes. */
#define TC_CODEC_DELIM_MAX 8

/** @brief The maximum payload used when @ref tc_codec::max_frame is 0: 1 MiB. */
#define TC_CODEC_DEFAULT_MAX_FRAME ((size_t)1 << 20)

/** @brief The largest value accepted for @ref tc_codec::max_frame (1 TiB, or SIZE_MAX / 4 on 32-bit). */
#define TC_CODEC_MAX_FRAME_LIMIT \
    ((size_t)(SIZE_MAX / 4 < ((uint64_t)1 << 40) ? SIZE_MAX / 4 : ((uint64_t)1 << 40)))

/** @brief The kinds of framing. */
typedef enum tc_codec_kind {
    TC_CODEC_RAW = 0,         /**< no framing: a frame is whatever bytes are available; the default */
    TC_CODEC_DELIMITED,       /**< frames end with a delimiter of 1 to TC_CODEC_DELIM_MAX bytes */
    TC_CODEC_LENGTH_PREFIXED, /**< frames start with an unsigned length of the payload */
    TC_CODEC_CUSTOM           /**< a user callback finds where each frame ends */
} tc_codec_kind;

/** @brief Byte order of a length prefix. */
typedef enum tc_byte_order {
    TC_BIG_ENDIAN = 0,   /**< most significant byte first (network order); the default */
    TC_LITTLE_ENDIAN = 1 /**< least significant byte first */
} tc_byte_order;

/**
 * @brief A custom codec's frame finder.
 *
 * Called with the bytes buffered so far, which always start at a frame
 * boundary. It must not keep @p buf, and must be a pure function of its
 * arguments (it is called again on the same bytes, plus more, after it
 * answered "need more").
 * @param buf        The buffered bytes (never NULL; @p len may be 0).
 * @param len        How many.
 * @param[out] frame_len Set, when a frame is complete, to its length in
 *                   bytes (1 to @p len).
 * @param ctx        @ref tc_codec::scan_ctx.
 * @return 1 when a frame of *@p frame_len bytes is complete, 0 when more
 *         bytes are needed, a negative code (normally TC_EBADFRAME) when the
 *         bytes can never become a valid frame.
 */
typedef int (*tc_codec_scan_fn)(const void *buf, size_t len, size_t *frame_len, void *ctx);

/**
 * @brief How messages are delimited. Build it with one of the constructors;
 *        zero-initialised it is the raw codec with a 1 MiB maximum.
 */
typedef struct tc_codec {
    /** @brief The framing. */
    tc_codec_kind kind;
    /** @brief Largest payload accepted, in bytes (for a custom codec: largest
     *         frame); 0 = TC_CODEC_DEFAULT_MAX_FRAME. For raw, the most bytes one
     *         frame read returns. At most TC_CODEC_MAX_FRAME_LIMIT. */
    size_t max_frame;
    /** @brief TC_CODEC_DELIMITED: the delimiter bytes (the first @ref delim_len count). */
    unsigned char delim[TC_CODEC_DELIM_MAX];
    /** @brief TC_CODEC_DELIMITED: the delimiter's length, 1 to TC_CODEC_DELIM_MAX. */
    unsigned char delim_len;
    /** @brief TC_CODEC_LENGTH_PREFIXED: the prefix width in bytes: 1, 2, 4 or 8. */
    unsigned char prefix_width;
    /** @brief TC_CODEC_LENGTH_PREFIXED: a tc_byte_order value. */
    unsigned char byte_order;
    /** @brief TC_CODEC_CUSTOM: the frame finder. */
    tc_codec_scan_fn scan;
    /** @brief TC_CODEC_CUSTOM: passed to @ref scan as its last argument. */
    void *scan_ctx;
} tc_codec;

/** @brief Initialiser for tc_codec: the raw codec with the default maximum. */
#define TC_CODEC_INIT {TC_CODEC_RAW, 0, {0, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, 0, 0}

/** @brief Room for any header tc_codec_encode() writes. */
#define TC_CODEC_HEAD_MAX 8

/**
 * @brief What goes around a payload when it is written as a frame:
 *        a header before it and a trailer after it (either may be empty).
 */
typedef struct tc_codec_envelope {
    unsigned char head[TC_CODEC_HEAD_MAX]; /**< the header bytes (a length prefix) */
    size_t head_len;                       /**< how many of head to send first */
    unsigned char tail[TC_CODEC_DELIM_MAX]; /**< the trailer bytes (a delimiter) */
    size_t tail_len;                       /**< how many of tail to send after the payload */
} tc_codec_envelope;

/**
 * @brief Make the raw codec (no framing) with the default maximum.
 * @param[out] out Receives the codec.
 * @return 0, or -EINVAL for NULL.
 */
TC_API int tc_codec_raw(tc_codec *out);

/**
 * @brief Make a delimiter codec: each frame ends with @p delim
 *        ("\n", "\r\n", "\0", ...); the payload excludes it.
 * @param[out] out Receives the codec; written only on success.
 * @param delim    The delimiter bytes (copied).
 * @param len      Their number, 1 to TC_CODEC_DELIM_MAX.
 * @return 0, or -EINVAL for NULL arguments or a length out of range.
 */
TC_API int tc_codec_delimited(tc_codec *out, const void *delim, size_t len);

/**
 * @brief Make a length-prefix codec: each frame is an unsigned integer of
 *        @p width bytes giving the payload's length (not counting the prefix),
 *        then the payload.
 * @param[out] out Receives the codec; written only on success.
 * @param width    1, 2, 4 or 8.
 * @param order    TC_BIG_ENDIAN or TC_LITTLE_ENDIAN.
 * @return 0, or -EINVAL for NULL, another width or another order.
 */
TC_API int tc_codec_length_prefixed(tc_codec *out, unsigned width, tc_byte_order order);

/**
 * @brief Make a custom codec: @p scan finds the end of each frame, and the
 *        frame is delivered whole (the payload is the frame).
 * @param[out] out Receives the codec; written only on success.
 * @param scan     The frame finder (see tc_codec_scan_fn).
 * @param ctx      Passed to @p scan; the codec keeps the pointer, never frees it.
 * @return 0, or -EINVAL for NULL @p out or @p scan.
 */
TC_API int tc_codec_custom(tc_codec *out, tc_codec_scan_fn scan, void *ctx);

/**
 * @brief Set a codec's maximum payload (custom: maximum frame).
 * @param codec The codec.
 * @param max   Bytes, 1 to TC_CODEC_MAX_FRAME_LIMIT; 0 restores the default (1 MiB).
 * @return 0, or -EINVAL for NULL or a value over the limit.
 */
TC_API int tc_codec_set_max_frame(tc_codec *codec, size_t max);

/**
 * @brief The maximum payload in effect (TC_CODEC_DEFAULT_MAX_FRAME when the field is 0).
 * @param codec The codec (NULL counts as the zero codec).
 * @return The maximum in bytes.
 */
TC_API size_t tc_codec_max_frame(const tc_codec *codec);

/**
 * @brief Check that a codec's fields make sense (for codecs filled by hand).
 * @param codec The codec.
 * @return 0, or -EINVAL: NULL, an unknown kind, a delimiter length of 0 or
 *         over TC_CODEC_DELIM_MAX, a prefix width other than 1, 2, 4 or 8, an
 *         unknown byte order, a custom codec without scan, a maximum over
 *         TC_CODEC_MAX_FRAME_LIMIT.
 */
TC_API int tc_codec_validate(const tc_codec *codec);

/**
 * @brief Find the first frame in a buffer. Pure: no I/O, no allocation.
 *
 * @p buf must start at a frame boundary. Nothing is read past
 * `buf + len`, and no more than the maximum frame plus its framing
 * overhead is ever examined, so a caller that buffers only until this
 * answers never holds more than tc_codec_max_frame() + 16 bytes for a frame.
 *
 * Limits are enforced as early as the bytes allow: a length prefix over the
 * maximum is refused as soon as the prefix is complete (a prefix announcing
 * 4 GiB costs 4 bytes, not 4 GiB); a delimited frame is refused as soon as
 * more than max + delimiter - 1 bytes are buffered with no delimiter among
 * them.
 * @param codec          The codec.
 * @param buf            The buffered bytes (may be NULL when @p len is 0).
 * @param len            How many.
 * @param[out] payload_off  On 1: where the payload starts within the frame.
 * @param[out] payload_len  On 1: the payload's length.
 * @param[out] frame_len    On 1: the whole frame's length (consume this many).
 * @return 1 when a frame is complete (the outputs are set); 0 when more bytes
 *         are needed (for raw: @p len is 0); TC_ETOOBIG when the frame's
 *         payload is or will be larger than the maximum; TC_EBADFRAME (or the
 *         custom callback's own negative code) when the bytes are malformed;
 *         -EINVAL for an invalid codec or NULL outputs.
 */
TC_API int tc_codec_scan(const tc_codec *codec, const void *buf, size_t len, size_t *payload_off,
                         size_t *payload_len, size_t *frame_len);

/**
 * @brief Compute what to write around a payload to make it one frame.
 *
 * Send `env.head`, the payload, then `env.tail` (tc_conn_write_frame() does
 * that with one vectored write). Raw: nothing around. Delimited: the
 * delimiter after. Length-prefixed: the prefix before. Custom: nothing
 * around; the payload must already be exactly one whole frame, which is
 * checked with the codec's scan callback.
 * @param codec    The codec.
 * @param payload  The payload (may be NULL when @p len is 0; read only for
 *                 delimited and custom codecs).
 * @param len      Its length.
 * @param[out] env Receives the header and trailer.
 * @return 0, or TC_ETOOBIG when @p len exceeds the maximum (raw has no
 *         write limit) or what the prefix width can express; TC_EBADFRAME
 *         when a delimited payload contains the delimiter (or would read back
 *         differently once the delimiter is appended), or a custom payload is
 *         not exactly one frame; -EINVAL for an invalid codec or NULL arguments.
 */
TC_API int tc_codec_encode(const tc_codec *codec, const void *payload, size_t len,
                           tc_codec_envelope *env);

#ifdef __cplusplus
}
#endif
#endif /* TCPCHAN_CODEC_H */
