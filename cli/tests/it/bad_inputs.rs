//! `ridectl` refuses bad command-line input before it publishes anything: one row per input,
//! each with the exact reason printed, exit code 2, and an empty saga stream at the end (against
//! a real nats-server with the streams provisioned, so a publish would have been stored).

use crate::common::{Harness, assert_code, stderr, stdout};

/// `args` is refused with `error: <reason>` on stderr, then a blank line (clap's hint).
struct Row {
    args: Vec<String>,
    reason: String,
}

fn id_error(what: &str, value: &str, found: char) -> String {
    format!(
        "{what} {value:?} contains {found:?}; only ASCII letters, digits, '_' and '-' are allowed \
         (ids are NATS subject tokens)"
    )
}

fn invalid(value: &str, arg: &str, reason: &str) -> String {
    format!("invalid value '{value}' for '{arg}': {reason}")
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |args: &[&str], reason: String| {
        rows.push(Row {
            args: args.iter().map(|a| a.to_string()).collect(),
            reason,
        })
    };
    let request = |flag: &str, value: &str| -> Vec<String> {
        let mut args: Vec<String> = [
            "ride",
            "request",
            "--rider",
            "u_1",
            "--from",
            "52.52,13.40",
            "--to",
            "52.50,13.45",
            "--card",
            "tok_visa",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = value.to_owned(),
            None => args.extend([flag.to_owned(), value.to_owned()]),
        }
        args
    };
    let long_id = "r".repeat(300);
    let lookalike = "r_\u{0430}bc"; // Cyrillic 'а'
    let fullwidth = "d_\u{FF58}"; // fullwidth 'x'

    // ---- ids that are not single subject tokens ---------------------------------------------
    for (id, reason) in [
        ("r.1", id_error("ride id", "r.1", '.')),
        ("*", id_error("ride id", "*", '*')),
        (">", id_error("ride id", ">", '>')),
        ("", "ride id is empty".to_owned()),
        ("r 1", id_error("ride id", "r 1", ' ')),
        (
            &long_id,
            "ride id is 300 bytes long; at most 64 are allowed".to_owned(),
        ),
        (lookalike, id_error("ride id", lookalike, '\u{0430}')),
    ] {
        add(&["ride", "start", id], invalid(id, "<RIDE>", &reason));
    }
    add(
        &["ride", "cancel", "r_1.>"],
        invalid("r_1.>", "<RIDE>", &id_error("ride id", "r_1.>", '.')),
    );
    add(
        &["driver", "register", "d.1", "--name", "Ana", "--at", "1,2"],
        invalid("d.1", "<ID>", &id_error("driver id", "d.1", '.')),
    );
    add(
        &["driver", "online", fullwidth],
        invalid(
            fullwidth,
            "<ID>",
            &id_error("driver id", fullwidth, '\u{FF58}'),
        ),
    );
    add(
        &["driver", "offline", "d:1"],
        invalid("d:1", "<ID>", &id_error("driver id", "d:1", ':')),
    );
    add(
        &["fraud", "unblock", "u_\u{fc}"],
        invalid(
            "u_\u{fc}",
            "<RIDER>",
            &id_error("rider id", "u_\u{fc}", '\u{fc}'),
        ),
    );
    add(
        &["ride", "arrive", "r_1\t"],
        invalid("r_1\t", "<RIDE>", &id_error("ride id", "r_1\t", '\t')),
    );
    add(
        &["fraud", "block", "u*1"],
        invalid("u*1", "<RIDER>", &id_error("rider id", "u*1", '*')),
    );
    let args = request("--rider", "u 1");
    add(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        invalid(
            "u 1",
            "--rider <RIDER_ID>",
            &id_error("rider id", "u 1", ' '),
        ),
    );
    let args = request("--id", "r.x");
    add(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        invalid("r.x", "--id <RIDE_ID>", &id_error("ride id", "r.x", '.')),
    );

    // ---- coordinates ------------------------------------------------------------------------
    for (flag, value, reason) in [
        (
            "--from",
            "91,0",
            "latitude out of range: 91.0 (must be between -90 and 90)",
        ),
        (
            "--to",
            "0,181",
            "longitude out of range: 181.0 (must be between -180 and 180)",
        ),
        (
            "--from",
            "NaN,0",
            "expected LAT,LNG in decimal degrees (e.g. 52.52,13.40), got \"NaN,0\"",
        ),
        (
            "--from",
            "inf,0",
            "expected LAT,LNG in decimal degrees (e.g. 52.52,13.40), got \"inf,0\"",
        ),
        (
            "--to",
            "1e999,0",
            "expected LAT,LNG in decimal degrees (e.g. 52.52,13.40), got \"1e999,0\"",
        ),
        (
            "--from",
            "52.5",
            "expected LAT,LNG in decimal degrees (e.g. 52.52,13.40), got \"52.5\"",
        ),
    ] {
        let args = request(flag, value);
        add(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            invalid(value, &format!("{flag} <LAT,LNG>"), reason),
        );
    }
    add(
        &["driver", "move", "d_1", "--at", "-91,0"],
        invalid(
            "-91,0",
            "--at <LAT,LNG>",
            "latitude out of range: -91.0 (must be between -90 and 90)",
        ),
    );
    add(
        &["driver", "online", "d_1", "--at", "0,-180.5"],
        invalid(
            "0,-180.5",
            "--at <LAT,LNG>",
            "longitude out of range: -180.5 (must be between -180 and 180)",
        ),
    );

    // ---- payment tokens ---------------------------------------------------------------------
    let token_reason = "a payment token is 1-64 letters, digits, '_' or '-', e.g. tok_visa";
    let long_token = "t".repeat(65);
    for token in ["4242 4242", "", long_token.as_str()] {
        let args = request("--card", token);
        add(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            invalid(token, "--card <TOKEN>", token_reason),
        );
    }

    // ---- distances and durations ------------------------------------------------------------
    for (flag, value, max) in [
        ("--distance-km", "-3", "40075"),
        ("--distance-km", "NaN", "40075"),
        ("--distance-km", "inf", "40075"),
        ("--distance-km", "1e9", "40075"),
        ("--duration-min", "-1", "10080"),
        ("--duration-min", "20000", "10080"),
        ("--duration-min", "abc", "10080"),
    ] {
        let placeholder = if flag == "--distance-km" { "KM" } else { "MIN" };
        add(
            &["ride", "complete", "r_1", flag, value],
            invalid(
                value,
                &format!("{flag} <{placeholder}>"),
                &format!("expected a number from 0 to {max}, got {value:?}"),
            ),
        );
    }

    // ---- text -------------------------------------------------------------------------------
    let long_name = "a".repeat(501);
    add(
        &[
            "driver", "register", "d_1", "--name", &long_name, "--at", "1,2",
        ],
        invalid(
            &long_name,
            "--name <NAME>",
            "name is 501 characters long; at most 500 are allowed",
        ),
    );
    // clap strips terminal escapes from what it prints (stderr is not a terminal here).
    for (name, shown, found) in [
        ("Ana\u{1b}[2J", "Ana", "'\\u{1b}'"),
        ("Ana\nBob", "Ana\nBob", "'\\n'"),
    ] {
        add(
            &["driver", "register", "d_1", "--name", name, "--at", "1,2"],
            invalid(
                shown,
                "--name <NAME>",
                &format!("name contains the control character {found}"),
            ),
        );
    }
    let reversed = "fraud \u{202E}gnirts";
    add(
        &["fraud", "block", "u_1", "--reason", reversed],
        invalid(
            reversed,
            "--reason <REASON>",
            "reason contains the control character '\\u{202e}'",
        ),
    );
    let oversize = "x".repeat(100 * 1024);
    add(
        &["fraud", "block", "u_1", "--reason", &oversize],
        invalid(
            &oversize,
            "--reason <REASON>",
            "reason is 102400 characters long; at most 500 are allowed",
        ),
    );

    // ---- missing and unknown arguments ------------------------------------------------------
    add(
        &[
            "ride", "request", "--rider", "u_1", "--from", "1,1", "--to", "1,2",
        ],
        "the following required arguments were not provided:".to_owned(),
    );
    add(
        &["ride", "start", "r_1", "--fare", "10"],
        "unexpected argument '--fare' found".to_owned(),
    );
    add(
        &["driver", "register", "d_1", "--at", "1,2"],
        "the following required arguments were not provided:".to_owned(),
    );
    // A review names a ride and one decision; a decision needs a ride.
    add(
        &["fraud", "review", "r_1"],
        "the following required arguments were not provided:".to_owned(),
    );
    add(
        &["fraud", "review", "--reject"],
        "the following required arguments were not provided:".to_owned(),
    );
    add(
        &["fraud", "review", "r_1", "--approve", "--reject"],
        "the argument '--approve' cannot be used with '--reject'".to_owned(),
    );
    add(
        &["fraud", "review", "r.1", "--approve"],
        invalid("r.1", "[RIDE]", &id_error("ride id", "r.1", '.')),
    );
    add(
        &["fraud", "review", "r_1", "--reject", "--note", "a\u{7}b"],
        // clap shows the value without its control character.
        invalid(
            "ab",
            "--note <NOTE>",
            "reason contains the control character '\\u{7}'",
        ),
    );
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_exit_2_with_the_exact_reason_and_publish_nothing() {
    let h = Harness::provisioned().await;
    let rows = rows();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for row in &rows {
        let args: Vec<&str> = row.args.iter().map(String::as_str).collect();
        let out = h.ridectl(&args).await;
        let err = stderr(&out);
        let expected = format!("error: {}\n", row.reason);
        if out.status.code() != Some(2) || !err.starts_with(&expected) || !stdout(&out).is_empty() {
            wrong.push(format!(
                "{args:?}: exit {:?}\n  expected {expected}  got      {err}",
                out.status.code()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(h.saga_messages().await, 0, "nothing may be published");

    // The rows' commands publish when given good values: the refusals above were the values'.
    let out = h
        .ridectl(&["driver", "register", "d_1", "--name", "Ana", "--at", "1,2"])
        .await;
    assert_code(&out, 0);
    assert_eq!(h.saga_messages().await, 1);
}
