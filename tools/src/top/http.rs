//! The smallest HTTP server a scraper needs: GET /metrics, one connection at a time, closed
//! after each answer. A scrape is a few KiB every few seconds; a client too slow to send
//! its request within the timeout is dropped so it cannot hold the others up for long.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The longest request head we read (a scraper's is a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;

/// An answer: status line, content type, body.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

/// Answers connections on `listener` for ever; `metrics` makes the body of GET /metrics.
/// A failed connection is the client's problem: it is logged to `on_error` and the server
/// goes on.
pub fn serve(
    listener: &TcpListener,
    timeout: Duration,
    mut metrics: impl FnMut() -> Response,
    mut on_error: impl FnMut(io::Error),
) {
    for stream in listener.incoming() {
        let result = stream.and_then(|stream| answer(stream, timeout, &mut metrics));
        if let Err(error) = result {
            on_error(error);
        }
    }
}

fn answer(
    mut stream: TcpStream,
    timeout: Duration,
    metrics: &mut impl FnMut() -> Response,
) -> io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let response = match read_head(&mut stream)? {
        None => Response::text("431 Request Header Fields Too Large", "request too long\n"),
        Some(head) => route(&head, metrics),
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}

/// The request head up to the blank line; None when it is longer than MAX_HEAD.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed before the end of its request",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn route(head: &str, metrics: &mut impl FnMut() -> Response) -> Response {
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    // A query string (some scrapers add one) does not change what is served.
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => metrics(),
        ("GET", "/") => Response::text("200 OK", "tokentop: the metrics are at /metrics\n"),
        ("GET", _) => Response::text("404 Not Found", "not found; the metrics are at /metrics\n"),
        _ => Response::text("405 Method Not Allowed", "only GET is served\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Response {
        Response::text("200 OK", text)
    }

    #[test]
    fn routes_serve_metrics_and_refuse_the_rest() {
        let mut metrics = || body("m 1\n");
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(route(&get("/metrics"), &mut metrics).body, "m 1\n");
        assert_eq!(route(&get("/metrics?x=1"), &mut metrics).body, "m 1\n");
        assert_eq!(route(&get("/nope"), &mut metrics).status, "404 Not Found");
        let post = "POST /metrics HTTP/1.1\r\n\r\n";
        assert_eq!(route(post, &mut metrics).status, "405 Method Not Allowed");
        assert_eq!(route("", &mut metrics).status, "405 Method Not Allowed");
    }
}
