"""A slower link for the registry rows (stdlib only): a TCP proxy on
127.0.0.1 that forwards to the registry and paces everything it sends back
to at most RATE bits a second, all connections together (one token bucket,
as one network link would share them). Requests go up unpaced: they are
small. The registry's own access log still counts the bytes it served.

    with Link(registry_port, 100e6) as link:
        ... docker://127.0.0.1:{link.port}/repo:tag ...

Loopback without it runs at memory speed, which flatters whoever fetches
the most; issue 23 holds the full pass to `skopeo copy` on real links.
"""
import socket
import threading
import time

CHUNK = 64 * 1024           # paced in pieces this big
BURST = 256 * 1024          # bytes sent ahead of the pace: a NIC queue, roughly


class Link:
    def __init__(self, upstream_port, rate_bits):
        self.upstream = ("127.0.0.1", upstream_port)
        self.rate = rate_bits / 8.0            # bytes a second
        self.lock = threading.Lock()
        self.next_free = time.monotonic()      # when the link is next idle
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        self.sockets = []
        self.thread = threading.Thread(target=self._accept, name="link-accept", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stopped = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.thread.join(timeout=5)

    def _pace(self, n):
        """Wait until n more bytes fit through the link."""
        with self.lock:
            now = time.monotonic()
            self.next_free = max(self.next_free, now) + n / self.rate
            wait = self.next_free - now - BURST / self.rate
        if wait > 0:
            time.sleep(wait)

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=30)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            pumps = [2]   # the connection's pumps still running
            for src, dst, paced in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, paced, pumps),
                                 name="link-pump", daemon=True).start()

    def _pump(self, src, dst, paced, pumps):
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if paced:
                    self._pace(len(data))
                dst.sendall(data)
        except OSError:
            pass
        # This direction is done: the other end sees its end; the last of
        # the two pumps closes the connection.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self.lock:
            pumps[0] -= 1
            last = pumps[0] == 0
            if last:
                self.sockets = [s for s in self.sockets if s not in (src, dst)]
        if last:
            src.close()
            dst.close()
