//! git's smart HTTP for gix, over ureq.
//!
//! gix's own HTTP backends are reqwest (tokio, hyper, h2, rustls with aws-lc: about 5 MB of a
//! 9.5 MB quadsync) and curl (the C library and OpenSSL at build time). A fetch is two requests
//! on one thread, so this adapter hands gix a small blocking client instead: ureq with rustls,
//! the stack tailmint ships, checking certificates against the system's trust store (a private
//! git server's CA installed on the host is trusted; nothing else is).
//!
//! gix's contract ([`Http`]): `get` and `post` answer at once; the request happens when the
//! headers are first read. A POST body is written first and sent whole when it is done: quadsync
//! only fetches, so a body is a list of wants and haves, and it is capped. Any status that is not
//! a success is an error naming it, a 401 included: gix would take a `PermissionDenied` as its
//! cue to run git's credential helpers and then prompt on the terminal, and a root service must
//! neither run programs named in git config nor wait for a person. Credentials belong in the
//! URL, over https (gix refuses to send them in clear text). GETs follow redirects (gix is told the new base
//! URL); POSTs do not, and credentials never follow a redirect to another host.

use std::cell::RefCell;
use std::io::{self, BufRead, Cursor, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use gix::protocol::transport::client::blocking_io::http::{
    GetResponse, Http, PostBodyDataKind, PostResponse,
};

/// The largest POST body quadsync sends (a fetch's wants and haves are a few KiB).
const MAX_POST_BODY: usize = 8 << 20;
/// Per connection; the fetch as a whole has its own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client gix fetches through.
#[derive(Debug)]
pub(crate) struct UreqHttp {
    agent: ureq::Agent,
    /// The base URL after a redirect, for gix to use for the next request.
    redirected: Rc<RefCell<Option<String>>>,
}

impl Default for UreqHttp {
    fn default() -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("quadsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        UreqHttp { agent, redirected: Rc::default() }
    }
}

/// One request, sent when its answer is first needed.
struct Exchange {
    agent: ureq::Agent,
    method: Method,
    url: String,
    base_url: String,
    headers: Vec<(String, String)>,
    body: Rc<RefCell<Vec<u8>>>,
    redirected: Rc<RefCell<Option<String>>>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

enum State {
    Pending,
    Answered {
        headers: Option<Vec<u8>>,
        body: Option<Box<dyn Read>>,
    },
    /// Kept to answer every later read the same way.
    Failed(Failure),
}

#[derive(Clone)]
enum Failure {
    Status(HttpStatus),
    Io(io::ErrorKind, String),
}

impl Failure {
    fn to_io(&self) -> io::Error {
        match self {
            Failure::Status(status) => io::Error::other(status.clone()),
            Failure::Io(kind, message) => io::Error::new(*kind, message.clone()),
        }
    }
}

/// An answer that is not a success, typed so that a failed fetch can tell refused credentials
/// and a missing repo from a network fault (`repo::FetchFailure`); it travels inside gix's
/// errors as an [`io::Error`]'s payload.
#[derive(Debug, Clone)]
pub(crate) struct HttpStatus {
    pub(crate) status: u16,
    message: String,
}

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpStatus {}

impl Exchange {
    fn answer(&mut self) -> io::Result<()> {
        if matches!(self.state, State::Pending) {
            self.state = match self.send() {
                Ok((headers, body)) => State::Answered { headers: Some(headers), body: Some(body) },
                Err(failure) => State::Failed(failure),
            };
        }
        match &self.state {
            State::Failed(failure) => Err(failure.to_io()),
            _ => Ok(()),
        }
    }

    fn send(&mut self) -> Result<(Vec<u8>, Box<dyn Read>), Failure> {
        let failed = |e: ureq::Error| {
            let kind = match &e {
                ureq::Error::Io(io) => io.kind(),
                ureq::Error::Timeout(_) => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::Other,
            };
            Failure::Io(kind, format!("{}: {e}", self.url))
        };
        let response = match self.method {
            Method::Get => {
                let mut request = self.agent.get(&self.url);
                for (name, value) in &self.headers {
                    request = request.header(name, value);
                }
                request.call().map_err(failed)?
            }
            Method::Post => {
                let mut request = self.agent.post(&self.url);
                for (name, value) in &self.headers {
                    request = request.header(name, value);
                }
                let body = std::mem::take(&mut *self.body.borrow_mut());
                request.config().max_redirects(0).build().send(&body[..]).map_err(failed)?
            }
        };
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => ": the server wants credentials (in QUADSYNC_GIT_URL, over https)",
                403 => ": the server refused these credentials",
                404 | 410 => ": no such repository (or not one these credentials may see)",
                _ => "",
            };
            let message = format!("{}: HTTP status {status}{hint}", self.url);
            return Err(Failure::Status(HttpStatus { status: status.as_u16(), message }));
        }
        if self.method == Method::Get {
            self.note_redirect(ureq::ResponseExt::get_uri(&response).to_string());
        }
        let mut headers = Vec::new();
        for (name, value) in response.headers() {
            headers.extend_from_slice(name.as_str().as_bytes());
            headers.push(b':');
            headers.extend_from_slice(value.as_bytes());
            headers.push(b'\n');
        }
        Ok((headers, Box::new(response.into_body().into_reader())))
    }

    /// After a redirect, the new base: the final URL without the part gix appended to the base.
    fn note_redirect(&self, final_url: String) {
        if final_url == self.url {
            return;
        }
        let tail = self.url.strip_prefix(&self.base_url).unwrap_or_default();
        if let Some(base) = final_url.strip_suffix(tail) {
            *self.redirected.borrow_mut() = Some(base.to_owned());
        }
    }
}

/// The response headers, one `name:value` line each, read once the request has been sent.
pub(crate) struct Headers(Rc<RefCell<Exchange>>, Cursor<Vec<u8>>);

/// The response body.
pub(crate) struct Body(Rc<RefCell<Exchange>>, Option<Box<dyn Read>>);

/// A POST body, kept until the response is read.
pub(crate) struct PostBody(Rc<RefCell<Vec<u8>>>);

impl Read for Headers {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Headers {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let mut exchange = self.0.borrow_mut();
        exchange.answer()?;
        if let State::Answered { headers, .. } = &mut exchange.state
            && let Some(headers) = headers.take()
        {
            self.1 = Cursor::new(headers);
        }
        drop(exchange);
        self.1.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        self.1.consume(amount);
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.1.is_none() {
            let mut exchange = self.0.borrow_mut();
            exchange.answer()?;
            if let State::Answered { body, .. } = &mut exchange.state {
                self.1 = body.take();
            }
        }
        match &mut self.1 {
            Some(body) => body.read(out),
            None => Ok(0),
        }
    }
}

impl Write for PostBody {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut body = self.0.borrow_mut();
        if body.len() + data.len() > MAX_POST_BODY {
            return Err(io::Error::other("a request body over 8 MiB: quadsync only fetches"));
        }
        body.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl UreqHttp {
    fn exchange(
        &self,
        method: Method,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> (Rc<RefCell<Exchange>>, Rc<RefCell<Vec<u8>>>) {
        let headers = headers
            .into_iter()
            .filter_map(|line| {
                let (name, value) = line.as_ref().split_once(':')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect();
        let body = Rc::new(RefCell::new(Vec::new()));
        let exchange = Exchange {
            agent: self.agent.clone(),
            method,
            url: url.to_owned(),
            base_url: base_url.to_owned(),
            headers,
            body: body.clone(),
            redirected: self.redirected.clone(),
            state: State::Pending,
        };
        (Rc::new(RefCell::new(exchange)), body)
    }
}

impl Http for UreqHttp {
    type Headers = Headers;
    type ResponseBody = io::BufReader<Body>;
    type PostBody = PostBody;

    fn get(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix_error::Result<GetResponse<Headers, io::BufReader<Body>>> {
        let (exchange, _) = self.exchange(Method::Get, url, base_url, headers);
        Ok(GetResponse {
            headers: Headers(exchange.clone(), Cursor::default()),
            body: io::BufReader::new(Body(exchange, None)),
        })
    }

    fn post(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _: PostBodyDataKind,
    ) -> gix_error::Result<PostResponse<Headers, io::BufReader<Body>, PostBody>> {
        let (exchange, body) = self.exchange(Method::Post, url, base_url, headers);
        Ok(PostResponse {
            post_body: PostBody(body),
            headers: Headers(exchange.clone(), Cursor::default()),
            body: io::BufReader::new(Body(exchange, None)),
        })
    }

    /// gix passes its `http.*` options from git config; the bare clone quadsync makes sets none.
    fn configure(&mut self, _: &dyn std::any::Any) -> gix_error::Result {
        Ok(())
    }

    fn redirected_base_url(&self) -> Option<String> {
        self.redirected.borrow().clone()
    }
}
