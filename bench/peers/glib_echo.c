/* SPDX-License-Identifier: MIT */
/* glib_echo: GIO's GThreadedSocketService (a thread per connection, blocking
 * streams), the closest GLib analogue of socketserver.ThreadingTCPServer. */
#include <gio/gio.h>
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKLOG 4096

static gboolean on_run(GThreadedSocketService *svc, GSocketConnection *conn,
                       GObject *source, gpointer ctx)
{
    (void)svc, (void)source, (void)ctx;
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(conn));
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
    char buf[16384];
    gssize n;
    while ((n = g_input_stream_read(in, buf, sizeof buf, NULL, NULL)) > 0)
        if (!g_output_stream_write_all(out, buf, (gsize)n, NULL, NULL, NULL))
            break;
    return TRUE;
}

static gboolean on_signal(gpointer loop)
{
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            addr = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--listen HOST:PORT]\n", argv[0]);
            return 2;
        }
    }
    const char *colon = strrchr(addr, ':');
    if (!colon) {
        fprintf(stderr, "--listen %s: want HOST:PORT\n", addr);
        return 2;
    }
    gchar *host = g_strndup(addr, (gsize)(colon - addr));
    GInetAddress *ia = g_inet_address_new_from_string(host);
    if (!ia) {
        fprintf(stderr, "--listen %s: want a numeric address\n", addr);
        return 2;
    }
    GSocketAddress *sa = g_inet_socket_address_new(ia, (guint16)atoi(colon + 1));
    GSocketService *svc = g_threaded_socket_service_new(-1); /* no cap on threads */
    g_socket_listener_set_backlog(G_SOCKET_LISTENER(svc), BACKLOG);
    GSocketAddress *eff = NULL;
    GError *err = NULL;
    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(svc), sa, G_SOCKET_TYPE_STREAM,
                                       G_SOCKET_PROTOCOL_TCP, NULL, &eff, &err)) {
        fprintf(stderr, "listen: %s\n", err->message);
        return 1;
    }
    g_signal_connect(svc, "run", G_CALLBACK(on_run), NULL);
    GMainLoop *loop = g_main_loop_new(NULL, FALSE);
    g_unix_signal_add(SIGTERM, on_signal, loop);
    g_unix_signal_add(SIGINT, on_signal, loop);
    g_socket_service_start(svc);
    printf("listening on %s:%u\n", host,
           (unsigned)g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(eff)));
    fflush(stdout);
    g_main_loop_run(loop);
    g_socket_service_stop(svc);
    g_socket_listener_close(G_SOCKET_LISTENER(svc));
    /* Connection threads may still be blocked in reads: exit without joining them. */
    fflush(stdout);
    _exit(0);
}
