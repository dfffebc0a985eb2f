//! A static file server on loopback: the box's "release host", from which Ignition downloads
//! the binaries at first boot.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

/// Serves the files of `dir` at `http://127.0.0.1:PORT/NAME` until the process ends.
pub fn serve(dir: PathBuf) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let name =
                line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
            let mut stream = &stream;
            let found = (!name.contains('/') && !name.starts_with('.'))
                .then(|| std::fs::read(dir.join(&name)).ok())
                .flatten();
            let _ = match found {
                Some(bytes) => write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )
                .and_then(|()| stream.write_all(&bytes)),
                None => write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            };
        }
    });
    Ok(url)
}
