//! A hostile stand-in for Tailscale's API: it answers in the published shapes, but with whatever
//! the test hands it, including echoes of the request (the secret, the token). tailnet-lab's
//! server stays honest; this one is for what a broken or malicious proxy might send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub target: String,
    /// Header lines as sent (`Name: value`).
    pub headers: Vec<String>,
    pub body: String,
}

type Answer = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// The server, answering each request with `answer`; it lives as long as the test process.
#[derive(Debug)]
pub(crate) struct Hostile {
    url: String,
}

impl Hostile {
    pub(crate) fn start(
        answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    ) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer: Arc<Answer> = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answer = answer.clone();
                std::thread::spawn(move || serve(stream, &*answer));
            }
        });
        Hostile { url }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

fn serve(stream: TcpStream, answer: &Answer) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        headers.push(header.trim_end().to_owned());
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let seen = Seen { method, target, headers, body: String::from_utf8_lossy(&body).into_owned() };
    let (status, body) = answer(&seen);
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}
