//! `ridectl driver position`: driver positions to the positions stream, one from the command
//! line or many from a file. Each is a compact `{lat, lng, at_ms}` on `pos.driver.<id>`; the
//! publishes of a file are pipelined and their acknowledgements awaited together.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ridesaga_schemas::{DriverId, GeoPoint, Position};
use serde::Serialize;

use super::Ctx;

/// What was published, for JSON output.
#[derive(Debug, Serialize)]
struct Reported {
    published: usize,
    /// The stream sequence of the last position stored.
    last_sequence: u64,
}

pub async fn run(
    ctx: &Ctx,
    id: Option<DriverId>,
    at: Option<GeoPoint>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let now_ms = i64::try_from(now_ms).context("the clock is out of range")?;
    let positions = match (id, at, file) {
        (Some(id), Some(at), None) => vec![(id, position(at, now_ms))],
        (None, None, Some(path)) => read(&path, now_ms)?,
        _ => bail!("give either DRIVER_ID LAT,LNG or --file PATH"),
    };
    let nats = ctx.connect().await?;
    // Fails early, with the provisioning hint, when the stream does not exist.
    nats.stream(ridesaga_schemas::streams::POSITION_STREAM)
        .await?;
    let mut pending = Vec::with_capacity(positions.len());
    for (driver, position) in &positions {
        let subject = Position::subject(driver);
        let ack = nats
            .js
            .publish(subject.clone(), position.encode().into())
            .await
            .with_context(|| format!("could not publish {subject}"))?;
        pending.push((subject, ack));
    }
    let mut last_sequence = 0;
    for (subject, ack) in pending {
        let ack = ack.await.with_context(|| {
            format!("no acknowledgement from the positions stream for {subject}")
        })?;
        last_sequence = last_sequence.max(ack.sequence);
    }
    let reported = Reported {
        published: positions.len(),
        last_sequence,
    };
    if ctx.out.is_json() {
        ctx.out.json(&reported)?;
    } else if let [(driver, position)] = positions.as_slice() {
        ctx.out.line(format!(
            "pos.driver.{driver} {},{} (stream seq {last_sequence})",
            position.lat, position.lng
        ));
    } else {
        ctx.out.line(format!(
            "published {} positions (last stream seq {last_sequence})",
            reported.published
        ));
    }
    Ok(())
}

fn position(at: GeoPoint, at_ms: i64) -> Position {
    Position {
        lat: at.lat,
        lng: at.lng,
        at_ms,
    }
}

/// The positions of a file (`-`: stdin), one `DRIVER_ID LAT,LNG [UNIX_MS]` per line; blank
/// lines and lines starting with `#` are skipped.
fn read(path: &Path, now_ms: i64) -> anyhow::Result<Vec<(DriverId, Position)>> {
    let text = if path == Path::new("-") {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(line.context("could not read stdin")?);
        }
        lines.join("\n")
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?
    };
    parse_lines(&text, now_ms)
}

/// Parses `DRIVER_ID LAT,LNG [UNIX_MS]` lines; an error names the line.
pub fn parse_lines(text: &str, now_ms: i64) -> anyhow::Result<Vec<(DriverId, Position)>> {
    let mut positions = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = (|| -> anyhow::Result<(DriverId, Position)> {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, at, ms) = match fields.as_slice() {
                [id, at] => (*id, *at, None),
                [id, at, ms] => (*id, *at, Some(*ms)),
                _ => bail!("expected DRIVER_ID LAT,LNG [UNIX_MS]"),
            };
            let driver = DriverId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let at: GeoPoint = at.parse()?;
            let at_ms = match ms {
                Some(ms) => ms
                    .parse::<i64>()
                    .ok()
                    .filter(|ms| *ms >= 0)
                    .with_context(|| format!("not a Unix time in ms: {ms:?}"))?,
                None => now_ms,
            };
            Ok((driver, position(at, at_ms)))
        })();
        positions.push(parsed.with_context(|| format!("line {}: {line:?}", index + 1))?);
    }
    if positions.is_empty() {
        bail!("no positions given");
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_driver_point_and_time() {
        let text = "# fleet\nd_1 52.5,13.4\n\nd_2 -33.9,18.4 1700000000000\n";
        let got = parse_lines(text, 42).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.as_str(), "d_1");
        assert_eq!(got[0].1.at_ms, 42);
        assert_eq!((got[1].1.lat, got[1].1.at_ms), (-33.9, 1_700_000_000_000));
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = parse_lines("d_1 52.5,13.4\nd_2 95,1\n", 0).unwrap_err();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
        assert!(parse_lines("# nothing\n", 0).is_err());
    }
}
