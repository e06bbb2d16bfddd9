//! The generator of hostile requests for `--scenario malformed` (and its smoke test in
//! `tests/api/malformed/storm.rs`, which includes this file): random methods, paths,
//! versions, headers, cookies, credentials and bodies, as raw bytes for a TCP socket or as
//! parts for an HTTP client. Request `i` of seed `s` is drawn from its own RNG, seeded from
//! `(s, i)`, so any one request is reproduced alone.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Real credentials to mix into requests (in the wrong places, cut, edited), and the
/// account's email (never its password).
#[derive(Debug, Clone, Default)]
pub(crate) struct Material {
    /// Wire tokens and JWTs issued by the service under test.
    pub(crate) tokens: Vec<String>,
    /// The account's email.
    pub(crate) email: String,
}

/// How a raw request's body relates to its `Content-Length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// The head is complete and every byte was sent: expect an answer.
    Complete,
    /// The client stops early (a declared body not sent, a head cut short) and closes its
    /// side: an answer is optional.
    Truncated,
}

/// One hostile request.
#[derive(Debug, Clone)]
pub(crate) enum Hostile {
    /// Bytes for a raw TCP socket.
    Raw {
        /// What is written.
        bytes: Vec<u8>,
        /// Whether the request is whole.
        framing: Framing,
    },
    /// Parts for an HTTP client (it frames the request; the parts may still be refused).
    Http {
        /// The method (possibly an extension method).
        method: String,
        /// The path and query.
        path: String,
        /// Headers (values may hold any bytes; the client drops the ones it cannot send).
        headers: Vec<(String, Vec<u8>)>,
        /// The body.
        body: Vec<u8>,
    },
}

/// Draws request `index` of `seed`: a raw request when `raw`, else an HTTP one.
pub(crate) fn generate(seed: u64, index: u64, raw: bool, material: &Material) -> Hostile {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut g = Gen {
        rng: &mut rng,
        material,
    };
    if raw {
        g.raw()
    } else {
        g.http()
    }
}

struct Gen<'a> {
    rng: &'a mut StdRng,
    material: &'a Material,
}

const ROUTES: &[&str] = &[
    "/auth/login",
    "/auth/anonymous",
    "/auth/refresh",
    "/auth/logout",
    "/auth/logout-all",
    "/auth/password",
    "/auth/session",
    "/auth/sessions",
    "/auth/sessions/00000000-0000-0000-0000-000000000000",
    "/auth/events",
    "/auth/openapi.json",
    "/healthz",
    "/readyz",
    "/",
];

const METHODS: &[&str] = &[
    "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "BREW", "get",
    "POST ", "P0ST",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/problem+json",
    "application/jsonx",
    "*/*",
    "",
    ";;;",
];

impl Gen<'_> {
    fn pick<'s>(&mut self, from: &'s [&'s str]) -> &'s str {
        from.choose(self.rng).copied().unwrap_or("")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.rng.random_range(0..=max);
        let mut v = vec![0u8; len];
        self.rng.fill(&mut v[..]);
        v
    }

    fn printable(&mut self, max: usize) -> String {
        let len = self.rng.random_range(0..=max);
        (0..len)
            .map(|_| char::from(self.rng.random_range(0x20u8..0x7f)))
            .collect()
    }

    /// A real token, cut or edited, or a token-shaped fake.
    fn token(&mut self) -> String {
        let real = self
            .material
            .tokens
            .choose(self.rng)
            .cloned()
            .unwrap_or_default();
        match self.rng.random_range(0..6) {
            0 | 1 => real,
            2 if !real.is_empty() => {
                let cut = self.rng.random_range(0..real.len());
                real[..cut].to_owned()
            }
            3 if !real.is_empty() => {
                let mut b = real.into_bytes();
                let at = self.rng.random_range(0..b.len());
                b[at] = self.rng.random_range(0x21u8..0x7f);
                String::from_utf8_lossy(&b).into_owned()
            }
            4 => format!(
                "{}_{}",
                self.pick(&["lks", "lkr", "lka", "LKS", "lk"]),
                self.printable(80)
            ),
            _ => self.printable(200),
        }
    }

    fn path(&mut self) -> String {
        let route = self.pick(ROUTES).to_owned();
        match self.rng.random_range(0..10) {
            0..=4 => route,
            5 => format!("{route}?{}", self.printable(60).replace(' ', "%20")),
            6 => format!("{route}/{}", self.printable(30).replace(' ', "")),
            7 => format!("/auth/{}", "../".repeat(self.rng.random_range(1..20))),
            8 => format!("/auth/sessions/{}", self.printable(40).replace(' ', "")),
            _ => format!("/{}", "a".repeat(self.rng.random_range(1..9000))),
        }
    }

    /// A JSON-ish body: right shapes with hostile values, deep nesting, bad UTF-8, NUL,
    /// huge numbers, duplicates, truncation, or noise.
    fn body(&mut self) -> Vec<u8> {
        let token = self.token();
        let email = self.material.email.clone();
        let s = match self.rng.random_range(0..16) {
            0 => format!(
                r#"{{"email":"{email}","password":"{}","mode":"stateless"}}"#,
                self.printable(40)
            ),
            1 => format!(
                r#"{{"email":{},"password":null,"mode":"stateful"}}"#,
                self.rng.random::<i64>()
            ),
            2 => format!(r#"{{"refresh_token":"{token}"}}"#),
            3 => format!(r#"{{"refresh_token":"{token}","refresh_token":"{token}"}}"#),
            4 => format!(r#"{{"api_key":"{token}"}}"#),
            5 => format!(
                r#"{{"mode":"{}"}}"#,
                self.pick(&["stateful", "stateless", "STATEFUL", "", "both"])
            ),
            6 => {
                let depth = self.rng.random_range(100..20_000);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            }
            7 => {
                let depth = self.rng.random_range(100..5_000);
                format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
            }
            8 => format!(
                r#"{{"keep_current":{}}}"#,
                self.pick(&["true", "1", "\"yes\"", "1e999", "-0", "null"])
            ),
            9 => format!(
                r#"{{"current_password":"{}","new_password":"{}"}}"#,
                self.printable(20),
                "x".repeat(self.rng.random_range(0..3000))
            ),
            10 => format!(
                r#"{{"email":"{email}\u0000","password":"\ud800\udfff\ud800","mode":"stateless"}}"#
            ),
            11 => format!("{}e99999999999", "9".repeat(self.rng.random_range(1..400))),
            12 => {
                let mut b = format!(r#"{{"refresh_token":"{token}"#).into_bytes();
                b.extend(self.bytes(64));
                return b;
            }
            13 => {
                let mut b = br#"{"email":""#.to_vec();
                b.extend([0xff, 0xfe, 0x00, 0xc3, 0x28]);
                b.extend(br#"","password":"p","mode":"stateless"}"#);
                return b;
            }
            14 => {
                let max = if self.chance(0.1) { 20_000 } else { 300 };
                return self.bytes(max);
            }
            _ => String::new(),
        };
        s.into_bytes()
    }

    /// Headers every request may carry, hostile or not.
    fn headers(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut h: Vec<(String, Vec<u8>)> = Vec::new();
        let n = self.rng.random_range(0..8);
        for _ in 0..n {
            let token = self.token();
            let (name, value): (&str, Vec<u8>) = match self.rng.random_range(0..16) {
                0 => ("cookie", format!("latchkey={token}").into_bytes()),
                1 => (
                    "cookie",
                    format!("__Host-latchkey={token}; latchkey={token}; a=b").into_bytes(),
                ),
                2 => ("cookie", self.bytes(200)),
                3 => ("authorization", format!("Bearer {token}").into_bytes()),
                4 => (
                    "authorization",
                    format!(
                        "{} {token}",
                        self.pick(&["Basic", "bearer", "Bearer", "Token", ""])
                    )
                    .into_bytes(),
                ),
                5 => ("content-type", self.pick(CONTENT_TYPES).as_bytes().to_vec()),
                6 => (
                    "origin",
                    self.pick(&[
                        "http://app.test",
                        "null",
                        "https://evil.example",
                        "http://app.test/",
                        "\u{0}",
                    ])
                    .as_bytes()
                    .to_vec(),
                ),
                7 => (
                    "x-forwarded-for",
                    format!(
                        "{}, {}",
                        self.printable(30),
                        self.pick(&["10.0.0.1", "::1", "garbage", "999.1.1.1"])
                    )
                    .into_bytes(),
                ),
                8 => (
                    "accept",
                    self.pick(&["text/event-stream", "*/*", "application/json;q=0", "\u{7f}"])
                        .as_bytes()
                        .to_vec(),
                ),
                9 => ("x-request-id", self.printable(100).into_bytes()),
                10 => ("user-agent", self.bytes(300)),
                11 => (
                    "sec-fetch-site",
                    self.pick(&["same-origin", "cross-site", "none"])
                        .as_bytes()
                        .to_vec(),
                ),
                12 => (
                    "accept-encoding",
                    self.pick(&["gzip", "br, zstd", "identity;q=0", "*;q=0"])
                        .as_bytes()
                        .to_vec(),
                ),
                13 => ("x-huge", vec![b'a'; self.rng.random_range(1_000..40_000)]),
                14 => ("x-nul", b"a\0b".to_vec()),
                _ => ("expect", b"100-continue".to_vec()),
            };
            h.push((name.to_owned(), value));
        }
        h
    }

    /// The method the route of `path` answers, mostly; any other sometimes.
    fn method_for(&mut self, path: &str, from: &[&str]) -> String {
        if self.chance(0.4) {
            return self.pick(from).to_owned();
        }
        let route = path.split('?').next().unwrap_or_default();
        if route.starts_with("/auth/sessions/") {
            "DELETE"
        } else if [
            "/auth/session",
            "/auth/sessions",
            "/auth/events",
            "/auth/openapi.json",
        ]
        .contains(&route)
            || !route.starts_with("/auth/")
        {
            "GET"
        } else {
            "POST"
        }
        .to_owned()
    }

    fn http(&mut self) -> Hostile {
        let path = self.path();
        let method = self.method_for(&path, &METHODS[..10]);
        let mut headers = self.headers();
        if self.chance(0.7) {
            headers.push((
                "content-type".into(),
                self.pick(CONTENT_TYPES).as_bytes().to_vec(),
            ));
        }
        let body = if self.chance(0.8) {
            self.body()
        } else {
            Vec::new()
        };
        Hostile::Http {
            method,
            path,
            headers,
            body,
        }
    }

    fn raw(&mut self) -> Hostile {
        let mut out = Vec::new();
        let mut framing = Framing::Complete;
        // The request line: method, target, version, sometimes wrong in each part.
        let path = match self.rng.random_range(0..12) {
            0 => "*".to_owned(),
            1 => format!("http://127.0.0.1{}", self.path()),
            2 => String::new(),
            _ => self.path(),
        };
        let method = if self.chance(0.1) {
            String::from_utf8_lossy(&self.bytes(12)).replace(['\r', '\n'], "")
        } else {
            self.method_for(&path, METHODS)
        };
        let version = self.pick(&[
            "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTX/1.1", "",
        ]);
        out.extend(format!("{method} {path} {version}\r\n").as_bytes());
        if self.chance(0.02) {
            // Invalid UTF-8 and NUL in the request target.
            out.extend([0xff, 0x00, 0xc0, b'\r', b'\n']);
        }
        if self.chance(0.9) {
            out.extend(b"host: 127.0.0.1\r\n");
        }
        if self.chance(0.05) {
            out.extend(b"host: a\r\nhost: b\r\n");
        }
        for (name, value) in self.headers() {
            out.extend(name.as_bytes());
            out.extend(b": ");
            out.extend(value.iter().filter(|b| !matches!(b, b'\r' | b'\n')));
            out.extend(b"\r\n");
        }
        match self.rng.random_range(0..30) {
            0 => out.extend(b"bad header line without colon\r\n"),
            1 => out.extend(b"x-folded: a\r\n  folded continuation\r\n"),
            2 => out.extend(b"x-bare-lf: a\nx-next: b\r\n"),
            3 => out.extend(b"na me: v\r\n"),
            4 => {
                for i in 0..self.rng.random_range(100..400) {
                    out.extend(format!("x-many-{i}: v\r\n").as_bytes());
                }
            }
            _ => {}
        }
        let body = if self.chance(0.7) {
            self.body()
        } else {
            Vec::new()
        };
        match self.rng.random_range(0..12) {
            // Chunked: well-formed, garbage sizes, or both chunked and a length.
            0 => {
                out.extend(b"transfer-encoding: chunked\r\n\r\n");
                out.extend(format!("{:x}\r\n", body.len()).as_bytes());
                out.extend(&body);
                out.extend(b"\r\n0\r\n\r\n");
            }
            1 => {
                out.extend(b"transfer-encoding: chunked\r\n\r\n");
                let size = self
                    .pick(&["zz", "-1", "ffffffffffffffffff", "4;ext=\x00", ""])
                    .to_owned();
                out.extend(format!("{size}\r\n").as_bytes());
                out.extend(&body);
                out.extend(b"\r\n0\r\n\r\n");
            }
            2 => {
                out.extend(
                    format!(
                        "transfer-encoding: chunked\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                out.extend(format!("{:x}\r\n", body.len()).as_bytes());
                out.extend(&body);
                out.extend(b"\r\n0\r\n\r\n");
            }
            3 => {
                out.extend(
                    format!(
                        "transfer-encoding: {}\r\n\r\n",
                        self.pick(&["gzip", "chunked, gzip", "identity", "x"])
                    )
                    .as_bytes(),
                );
                out.extend(&body);
            }
            // Lengths that lie or cannot be read.
            4 => {
                let cl = self
                    .pick(&[
                        "-1",
                        "abc",
                        "1e3",
                        "18446744073709551616",
                        "+5",
                        "0x10",
                        " ",
                    ])
                    .to_owned();
                out.extend(format!("content-length: {cl}\r\n\r\n").as_bytes());
                out.extend(&body);
            }
            5 => {
                out.extend(
                    format!(
                        "content-length: {}\r\ncontent-length: {}\r\n\r\n",
                        body.len(),
                        body.len() + 1
                    )
                    .as_bytes(),
                );
                out.extend(&body);
            }
            6 => {
                // Declares more than it sends, then gives up.
                out.extend(
                    format!(
                        "content-length: {}\r\n\r\n",
                        body.len() + self.rng.random_range(1..100_000)
                    )
                    .as_bytes(),
                );
                out.extend(&body);
                framing = Framing::Truncated;
            }
            7 => {
                // Declares less than it sends: the rest is a garbage next request.
                out.extend(format!("content-length: {}\r\n\r\n", body.len() / 2).as_bytes());
                out.extend(&body);
            }
            8 => {
                // A head cut short.
                out.truncate(self.rng.random_range(0..out.len().max(1)));
                framing = Framing::Truncated;
            }
            _ => {
                out.extend(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend(&body);
            }
        }
        Hostile::Raw {
            bytes: out,
            framing,
        }
    }
}
