#!/usr/bin/python3
"""A minimal Docker/OCI registry token server for ocimount's registry tests.

tests/support/registry.rs starts it (with /usr/bin/python3, which has
Debian's python3-cryptography) in front of a `docker-registry` configured
with `auth: token:`. It implements the token flow of the distribution spec
(https://distribution.github.io/distribution/spec/auth/token/):

  GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]
       with optional Basic credentials;
  POST /token  (OAuth2 form: grant_type=password, username, password,
       service, scope) as containerd sends when it has credentials;
  POST /token  (OAuth2 form: grant_type=refresh_token, refresh_token,
       service, scope, client_id), the exchange of an identity token,
       when started with --refresh-token TOKEN: that token stands for the
       configured user, any other gets 400 {"error": "invalid_grant"}.

Anonymous requests are granted `pull` only (or refused with
--no-anonymous); the configured user is granted `pull` and `push`; wrong
credentials get 401. With --refresh-token, a GET whose Basic password is
the refresh token (the user name being the configured user's, empty or
`<token>`) is the configured user's too: it is what clients send when the
POST is not there. The answer is
{"token": JWT, "access_token": JWT, "expires_in": TTL, "issued_at": ...},
or for the refresh-token grant, OAuth2's
{"access_token": JWT, "token_type": "Bearer", "expires_in": TTL, "scope": ...}
(no "token": a client must read access_token).

With --no-oauth-post every POST gets 404, as from token servers (GCR's,
once) that only know GET.

The JWT is RS256, signed with --key, and carries the certificate --cert in
its `x5c` header; the registry's `rootcertbundle` is the CA that issued
that certificate. Claims: iss, sub, aud (= service, a string, as registry
2.8 wants), exp, nbf, iat, jti, access.

Registry 2.8 accepts a token for 60 s past its `exp` (its clock-skew
leeway); with --expire-exactly the claim is set 60 s early so that the
registry refuses the token exactly --ttl seconds after it was issued.

The server binds 127.0.0.1 on a free port and writes the port to
--port-file once it listens. Every request is logged to stderr as one line:
  token GET /token?... user=NAME|anonymous status=200 granted=SCOPES
and a POST's line ends with its grant_type and client_id:
  token POST /token user=NAME status=200 granted=SCOPES grant=refresh_token client_id=ID
"""

import argparse
import base64
import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

REGISTRY_LEEWAY = 60


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_scope(scope):
    """'repository:a/b:pull,push' -> ('repository', 'a/b', ['pull', 'push'])."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer:
    def __init__(self, args):
        with open(args.key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(args.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.args = args

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)

    def authenticate(self, user, password):
        """'anonymous', the user's name, or None for bad credentials."""
        if user is None:
            return "anonymous"
        if user == self.args.user and password == self.args.password:
            return user
        if (
            self.args.refresh_token
            and password == self.args.refresh_token
            and user in (self.args.user, "", "<token>")
        ):
            return self.args.user
        return None

    def grant(self, who, scopes):
        allowed = {"pull"} if who == "anonymous" else {"pull", "push"}
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                parsed = parse_scope(one)
                if parsed is None:
                    continue
                kind, name, actions = parsed
                granted = [a for a in actions if a in allowed]
                if kind == "repository" and granted:
                    access.append({"type": kind, "name": name, "actions": granted})
        return access

    def issue(self, who, service, access):
        now = int(time.time())
        ttl = self.args.ttl
        exp = now + ttl - (REGISTRY_LEEWAY if self.args.expire_exactly else 0)
        claims = {
            "iss": self.args.issuer,
            "sub": "" if who == "anonymous" else who,
            "aud": service,
            "exp": exp,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = self.sign(claims)
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": ttl, "issued_at": issued}


def make_handler(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ocimount-test-token-server"

        def log_message(self, fmt, *args):
            pass

        def log_line(self, who, status, granted, form=None):
            scopes = " ".join(
                "%s:%s:%s" % (a["type"], a["name"], ",".join(a["actions"])) for a in granted
            )
            extra = ""
            if form is not None:
                extra = " grant=%s client_id=%s" % (
                    form.get("grant_type", ["-"])[0] or "-",
                    form.get("client_id", ["-"])[0] or "-",
                )
            sys.stderr.write(
                "token %s %s user=%s status=%d granted=%s%s\n"
                % (self.command, self.path, who or "invalid", status, scopes or "-", extra)
            )
            sys.stderr.flush()

        def reply(self, status, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def basic_credentials(self):
            value = self.headers.get("Authorization", "")
            if not value.lower().startswith("basic "):
                return None, None
            try:
                decoded = base64.b64decode(value[6:].strip()).decode()
            except ValueError:
                return "", ""
            user, _, password = decoded.partition(":")
            return user, password

        def answer(self, user, password, service, scopes, form=None):
            who = server.authenticate(user, password)
            if who is None or (who == "anonymous" and server.args.no_anonymous):
                self.log_line(who, 401, [], form)
                self.refuse_reply()
                return
            self.grant_to(who, service, scopes, form)

        def grant_to(self, who, service, scopes, form=None, oauth=False):
            if service != server.args.service:
                self.log_line(who, 400, [], form)
                self.reply(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
                return
            access = server.grant(who, scopes)
            self.log_line(who, 200, access, form)
            issued = server.issue(who, service, access)
            if oauth:
                issued = {
                    "access_token": issued["access_token"],
                    "token_type": "Bearer",
                    "expires_in": issued["expires_in"],
                    "scope": " ".join(scopes),
                }
            self.reply(200, issued)

        def refuse_reply(self):
            self.reply(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                [("WWW-Authenticate", 'Basic realm="ocimount-test-token-server"')],
            )

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self.log_line("-", 404, [])
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            query = parse_qs(url.query)
            user, password = self.basic_credentials()
            self.answer(user, password, query.get("service", [""])[0], query.get("scope", []))

        def do_POST(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length", "0") or "0")
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            if url.path != "/token":
                self.log_line("-", 404, [])
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            if server.args.no_oauth_post:
                self.log_line("-", 404, [], form)
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "no POST here"}]})
                return
            grant_type = form.get("grant_type", [""])[0]
            service = form.get("service", [""])[0]
            scopes = form.get("scope", [])
            if grant_type == "password":
                self.answer(
                    form.get("username", [None])[0],
                    form.get("password", [""])[0],
                    service,
                    scopes,
                    form,
                )
            elif grant_type == "refresh_token" and server.args.refresh_token:
                if form.get("refresh_token", [""])[0] != server.args.refresh_token:
                    self.log_line(None, 400, [], form)
                    self.reply(400, {"error": "invalid_grant"})
                    return
                self.grant_to(server.args.user, service, scopes, form, oauth=True)
            else:
                self.log_line("-", 400, [], form)
                self.reply(400, {"error": "unsupported_grant_type"})

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--key", required=True, help="PEM private key (RSA) that signs tokens")
    p.add_argument("--cert", required=True, help="PEM certificate of that key (x5c)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--ttl", type=int, default=300)
    p.add_argument("--expire-exactly", action="store_true")
    p.add_argument("--no-anonymous", action="store_true")
    p.add_argument("--refresh-token", help="the identity token that stands for --user")
    p.add_argument("--no-oauth-post", action="store_true", help="answer every POST with 404")
    p.add_argument("--port-file", required=True)
    args = p.parse_args()

    server = TokenServer(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(server))
    httpd.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(httpd.server_address[1]))
    os.rename(tmp, args.port_file)
    sys.stderr.write("token server listening on 127.0.0.1:%d\n" % httpd.server_address[1])
    sys.stderr.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
