//! tokentop --metrics-listen as a process, scraped over HTTP, its exposition parsed by the
//! Python prometheus_client parser (installed by scripts/test.sh from
//! tools/tests/requirements.txt).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// tokentop serving metrics, and the address it printed.
pub struct Exporter {
    child: Child,
    pub addr: String,
}

impl Exporter {
    pub fn start(socket: &std::path::Path) -> Exporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokentop"))
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--socket",
                socket.to_str().unwrap(),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.strip_suffix("/metrics\n"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        // Drain the rest so the exporter never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Exporter { child, addr }
    }

    /// GET `path`: the status line and the body.
    pub fn get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exposition parsed by prometheus_client: (name, labels, value) per sample, and the
/// type of each family.
pub fn parse_prometheus(text: &str) -> (Vec<(String, Value, f64)>, Value) {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples, types = [], {}
for family in text_string_to_metric_families(sys.stdin.read()):
    types[family.name] = family.type
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"samples": samples, "types": types}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs it with prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition (pip install -r tools/tests/requirements.txt): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_owned(),
                s[1].clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect();
    (samples, parsed["types"].clone())
}

pub fn sample(samples: &[(String, Value, f64)], name: &str, labels: Value) -> f64 {
    let wanted = labels.as_object().unwrap();
    samples
        .iter()
        .find(|(n, l, _)| n == name && wanted.iter().all(|(k, v)| &l[k] == v))
        .unwrap_or_else(|| panic!("no sample {name} {labels}"))
        .2
}
