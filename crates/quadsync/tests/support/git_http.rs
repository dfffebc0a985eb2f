//! A real git server on loopback for tests: `git http-backend` (smart HTTP) behind a minimal
//! HTTP/1.1 front end, one request per connection, in clear or over TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct GitServer {
    pub url: String,
}

/// How a connection is answered: the stream, the served root, the expected `Authorization`.
type Handler = dyn Fn(TcpStream, &Path, Option<&str>) + Send + Sync;

impl GitServer {
    /// Serves every repository under `root` at `http://127.0.0.1:PORT/NAME`.
    pub(crate) fn start(root: &Path) -> GitServer {
        GitServer::start_with(root, None)
    }

    /// The same, answering only requests with HTTP basic auth `credentials` (`user:password`)
    /// and redirecting `/moved/PATH` to `/PATH`, as a host that renamed a repo does. Under
    /// `/forbidden/` every answer is 403, under `/failing/` 502.
    pub(crate) fn start_with(root: &Path, credentials: Option<&str>) -> GitServer {
        let expected = credentials.map(|c| format!("Basic {}", base64(c.as_bytes())));
        let handler: Arc<Handler> = Arc::new(|mut stream, root, expected| {
            serve(&mut stream, root, expected);
        });
        GitServer::listen("http://127.0.0.1", root, expected, handler)
    }

    /// Over TLS with `chain` (leaf first) and its `key`, at `https://localhost:PORT/NAME`.
    pub(crate) fn start_tls(
        root: &Path,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> GitServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let handler: Arc<Handler> = Arc::new(move |stream, root, expected| {
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else { return };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            serve(&mut tls, root, expected);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        GitServer::listen("https://localhost", root, None, handler)
    }

    fn listen(
        base: &str,
        root: &Path,
        expected: Option<String>,
        handler: Arc<Handler>,
    ) -> GitServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("{base}:{}", listener.local_addr().unwrap().port());
        let root = root.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (handler, root, expected) = (handler.clone(), root.clone(), expected.clone());
                std::thread::spawn(move || handler(stream, &root, expected.as_deref()));
            }
        });
        GitServer { url }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let shown = i <= chunk.len();
            out.push(if shown { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn serve(stream: &mut (impl Read + Write), root: &Path, expected_authorization: Option<&str>) {
    let mut reader = BufReader::new(&mut *stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) =
        (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(length) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(length, 0);
        let _ = reader.read_exact(&mut body);
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            let _ = reader.read_line(&mut size);
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            let _ = reader.read_exact(&mut chunk);
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    drop(reader);
    if let Some(expected) = expected_authorization
        && header("authorization").as_deref() != Some(expected)
    {
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    // As a host answers a repo these credentials may not read, and one having a bad day.
    for (prefix, status) in [("/forbidden/", "403 Forbidden"), ("/failing/", "502 Bad Gateway")] {
        if target.starts_with(prefix) {
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
    }
    if let Some(rest) = target.strip_prefix("/moved/") {
        let _ = write!(
            stream,
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let output = child.wait_with_output().unwrap();
    let split = output.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split =
        split.or_else(|| output.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, content) = match split {
        Some((i, n)) => {
            (String::from_utf8_lossy(&output.stdout[..i]).into_owned(), &output.stdout[i + n..])
        }
        None => (String::new(), &output.stdout[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response_headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some(("Status", value)) => status = value.trim().to_owned(),
            Some((name, value)) => {
                response_headers.push_str(&format!("{name}: {}\r\n", value.trim()))
            }
            None => {}
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    let _ = stream.write_all(content);
}
