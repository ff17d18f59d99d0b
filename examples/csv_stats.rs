//! Map-reduce statistics over a CSV file: per-station count, mean, min and
//! max of a temperature column.
//!
//! A producer on a service thread reads the file in blocks of about 1 MiB,
//! cut at line ends, into a bounded channel (so the file is never all in
//! memory, and the reader does no parsing); a consumer stage
//! on the thread pool parses each block into partial statistics (the map);
//! this thread merges the partials as they arrive (the reduce). Malformed
//! lines are counted, not fatal. The file is generated first, with a few
//! bad lines in it, and the result is checked against a sequential pass.
//!
//! Run with `cargo run --release -p seedcore --example csv_stats`
//! (`-- 5000000` for more rows).

use seedcore::{ChunkSize, ConcurrentSystem};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// Bytes per block sent to the consumers (then up to the next line end).
const BLOCK: usize = 1 << 20;

const STATIONS: [&str; 8] = [
    "Oslo", "Lagos", "Lima", "Perth", "Quito", "Reno", "Sofia", "Turku",
];

/// Statistics of one station.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Agg {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Agg {
    fn new(v: f64) -> Agg {
        Agg {
            count: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// Partial statistics of some lines.
#[derive(Debug, Default)]
struct Partial {
    stations: BTreeMap<String, Agg>,
    rows: u64,
    bad: u64,
}

impl Partial {
    fn add_line(&mut self, line: &str) {
        let mut cols = line.split(',');
        let (Some(station), Some(temp), Some(_humidity), None) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            self.bad += 1;
            return;
        };
        let Ok(t) = temp.trim().parse::<f64>() else {
            self.bad += 1;
            return;
        };
        self.rows += 1;
        match self.stations.get_mut(station) {
            Some(a) => a.merge(&Agg::new(t)),
            None => {
                self.stations.insert(station.to_owned(), Agg::new(t));
            }
        }
    }

    fn merge(mut self, o: Partial) -> Partial {
        for (k, v) in o.stations {
            self.stations
                .entry(k)
                .and_modify(|a| a.merge(&v))
                .or_insert(v);
        }
        self.rows += o.rows;
        self.bad += o.bad;
        self
    }
}

/// Parses one block of whole lines (the map step).
fn parse_block(block: Vec<u8>) -> Partial {
    let mut p = Partial::default();
    for line in block.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match std::str::from_utf8(line) {
            Ok(l) => p.add_line(l),
            Err(_) => p.bad += 1,
        }
    }
    p
}

/// Reads `r` in blocks of about [`BLOCK`] bytes that end at a line end,
/// after skipping the header line, and sends them until the end, a closed
/// channel, or a cancelled context.
fn read_blocks(
    mut r: impl BufRead,
    tx: &seedcore::channel::Sender<Vec<u8>>,
    ctx: &seedcore::TaskContext,
) -> std::io::Result<()> {
    let mut header = Vec::new();
    r.read_until(b'\n', &mut header)?;
    loop {
        let mut block = vec![0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match r.read(&mut block[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        block.truncate(filled);
        // Complete the last line.
        r.read_until(b'\n', &mut block)?;
        if block.is_empty() || ctx.is_cancelled() || tx.send(block).is_err() {
            return Ok(());
        }
    }
}

/// Writes `rows` rows (and every 100,000th line malformed).
fn generate(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "station,temperature,humidity")?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let station = STATIONS[(x % STATIONS.len() as u64) as usize];
        let temp = ((x >> 8) % 800) as f64 / 10.0 - 30.0;
        if i % 100_000 == 99_999 {
            writeln!(w, "{station};{temp:.1}")?;
        } else {
            writeln!(w, "{station},{temp:.1},{}", (x >> 20) % 100)?;
        }
    }
    w.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 1_000_000,
    };
    let path = std::env::temp_dir().join(format!("seedcore-csv-stats-{}.csv", std::process::id()));
    let t = Instant::now();
    generate(&path, rows)?;
    println!(
        "wrote {rows} rows to {} in {:?}",
        path.display(),
        t.elapsed()
    );

    let system = ConcurrentSystem::new()?;
    let t = Instant::now();
    let file = path.clone();
    // The producer: read the file in blocks into a channel of 4 blocks.
    let (blocks, reader) = system.produce("csv-reader", 4, move |tx, ctx| {
        read_blocks(BufReader::new(File::open(&file)?), tx, ctx)
    })?;
    // The consumers (map) and the merge (reduce), as blocks arrive.
    let total = system
        .consume(blocks, parse_block)
        .chunk_size(ChunkSize::Fixed(1))
        .progress(true)
        .fold(Partial::default(), Partial::merge)?;
    reader.wait()??;
    let parallel = t.elapsed();

    let t = Instant::now();
    let mut check = Partial::default();
    for line in BufReader::new(File::open(&path)?).lines().skip(1) {
        check.add_line(&line?);
    }
    let sequential = t.elapsed();
    std::fs::remove_file(&path)?;

    println!(
        "{:<8} {:>9} {:>7} {:>7} {:>7}",
        "station", "rows", "mean", "min", "max"
    );
    for (name, a) in &total.stations {
        println!(
            "{name:<8} {:>9} {:>7.2} {:>7.1} {:>7.1}",
            a.count,
            a.sum / a.count as f64,
            a.min,
            a.max
        );
    }
    println!(
        "{} rows, {} malformed lines; map-reduce {parallel:?}, one thread {sequential:?}",
        total.rows, total.bad
    );
    assert_eq!((total.rows, total.bad), (check.rows, check.bad));
    assert_eq!(total.rows + total.bad, rows);
    for (name, a) in &check.stations {
        let b = &total.stations[name];
        assert_eq!((a.count, a.min, a.max), (b.count, b.min, b.max));
        assert!((a.sum - b.sum).abs() < 1e-6 * a.sum.abs().max(1.0));
    }
    Ok(())
}
