"""HTTP/1.1 head parsing on the load balancer's path: apps/http.py against httptools (the
llhttp binding) and h11, side by side in one run.

Each parser gets what the lb parses per request -- a wrk-like request head and an
nginx-like response head (Content-Length body) -- and must produce what the lb needs of
them: method, target, version, the field lines, keep-alive, and how the body is framed.
Heads are complete (the lb calls the parser once it has found the blank line), so the
streaming parsers see one feed each.  Prints µs per request+response pair (min of 5
repeats) and the ratio to apps/http.py.

    python benchmarks/http_parsers.py [--number 20000]
"""

import argparse
import timeit

from acceltcp.apps.http import head_end, parse_request, parse_response

REQUEST = (b"GET /static/index.html?v=7 HTTP/1.1\r\nHost: 198.18.0.1:8080\r\n"
           b"User-Agent: wrk/4.2.0\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
           b"Connection: keep-alive\r\nX-Request-Id: 5b9d1c\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 02:00:00 GMT\r\n"
            b"Content-Type: text/html\r\nContent-Length: 612\r\n"
            b"Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"5f1-23\"\r\nAccept-Ranges: bytes\r\n\r\n")


def ours():
    req = parse_request(REQUEST[:head_end(REQUEST)])
    resp = parse_response(RESPONSE[:head_end(RESPONSE)], req.method)
    return req.method, req.target, req.keep_alive, resp.status, resp.body, resp.length


def make_httptools():
    import httptools

    class Head:
        __slots__ = ("url", "fields", "done")

        def __init__(self):
            self.fields = []
            self.done = False

        def on_url(self, url):
            self.url = url

        def on_header(self, name, value):
            self.fields.append((name, value))

        def on_headers_complete(self):
            self.done = True

    def run():
        rq = Head()
        p = httptools.HttpRequestParser(rq)
        p.feed_data(REQUEST)
        rs = Head()
        q = httptools.HttpResponseParser(rs)
        q.feed_data(RESPONSE)
        length = next(int(v) for n, v in rs.fields if n.lower() == b"content-length")
        return (p.get_method(), rq.url, p.should_keep_alive(), q.get_status_code(),
                length)
    return run


def make_h11():
    import h11

    def run():
        srv = h11.Connection(h11.SERVER)
        srv.receive_data(REQUEST)
        req = srv.next_event()
        cli = h11.Connection(h11.CLIENT)
        cli.send(h11.Request(method=req.method, target=req.target, headers=req.headers))
        cli.receive_data(RESPONSE)
        resp = cli.next_event()
        return req.method, req.target, resp.status_code
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20000)
    args = ap.parse_args()
    candidates = [("acceltcp.apps.http", lambda: ours)]
    candidates += [("httptools (llhttp)", make_httptools), ("h11", make_h11)]
    base = None
    print("%-20s %12s %8s" % ("parser", "µs/req+resp", "ratio"))
    for name, make in candidates:
        try:
            fn = make()
            fn()
        except ImportError as e:
            print("%-20s %12s %8s  (%s)" % (name, "-", "-", e))
            continue
        t = min(timeit.repeat(fn, number=args.number, repeat=5)) / args.number * 1e6
        base = base or t
        print("%-20s %12.2f %7.2fx" % (name, t, base / t))


if __name__ == "__main__":
    main()
