//! The test harness's SMS receiver as a program, for `scripts/up --receivers`: answers like an
//! SMS provider on 127.0.0.1:PORT and appends every message it accepts to FILE as one JSON line
//! (`sid`, `to`, `from`, `body`, `idempotency_key`).
//!
//! Usage: ridesaga-sms-receiver PORT FILE

use std::io::Write;
use std::time::Duration;

use ridesaga_testkit::SmsReceiver;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), Some(path)) = (args.first().and_then(|p| p.parse().ok()), args.get(1)) else {
        eprintln!("usage: ridesaga-sms-receiver PORT FILE");
        return std::process::ExitCode::from(2);
    };
    let receiver = match SmsReceiver::start_on(port).await {
        Ok(receiver) => receiver,
        Err(e) => {
            eprintln!("ridesaga-sms-receiver: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("ridesaga-sms-receiver: listening on {}", receiver.url(""));
    let mut written = 0;
    loop {
        let messages = receiver.messages();
        if messages.len() > written {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path);
            let Ok(mut file) = file else {
                eprintln!("ridesaga-sms-receiver: cannot open {path}");
                return std::process::ExitCode::FAILURE;
            };
            for sms in &messages[written..] {
                let line = serde_json::json!({
                    "sid": sms.sid,
                    "to": sms.to,
                    "from": sms.from,
                    "body": sms.body,
                    "idempotency_key": sms.idempotency_key,
                });
                if writeln!(file, "{line}").is_err() {
                    return std::process::ExitCode::FAILURE;
                }
            }
            written = messages.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
