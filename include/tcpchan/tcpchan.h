/* SPDX-License-Identifier: MIT */
/**
 * @file tcpchan.h
 * @brief The umbrella header: include this one to get all of libtcpchan.
 *
 * It also brings `<errno.h>` (through error.h): results are compared with
 * negated errno values such as `-ETIMEDOUT` and `-ENOENT`.
 */
#ifndef TCPCHAN_TCPCHAN_H
#define TCPCHAN_TCPCHAN_H

#include "common.h"
#include "version.h"
#include "clock.h"
#include "error.h"
#include "addr.h"
#include "codec.h"
#include "conn.h"
#include "server.h"
#include "prefork.h"
#include "ws.h"
#include "loop.h"
#include "transport.h"

#endif /* TCPCHAN_TCPCHAN_H */
