//! `--format json` in one pass over the paths: each path is judged once
//! (not once for the summary and again as it is written), by several
//! threads at a time, each judging chunks of consecutive paths and
//! rendering them exactly as they stand in the report. The chunks are
//! kept in plan order in a spill (memory up to a bound, then a nameless
//! temporary file) while the summary is counted; then the report's head
//! (which holds the summary) is written, the spilled paths after it, and
//! the tail. Byte for byte what [`StreamedReport::write_json`] writes.
//!
//! The coordinator of a 100-host mesh judges 99,000 paths after the last
//! agent's sweep, while every core is otherwise idle: this is the part of
//! the round's wall that the report costs.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::ops::ControlFlow;
use std::sync::mpsc;

use super::StreamedReport;
use crate::report::{Summary, Verdict};

/// How [`StreamedReport::write_json_once`] divides its work.
#[derive(Debug, Clone, Copy)]
pub struct OnePass {
    /// Threads judging paths (at least 1).
    pub threads: usize,
    /// Paths per chunk a thread judges and renders at a time.
    pub chunk: usize,
    /// Bytes of rendered paths held in memory before they go to a
    /// temporary file.
    pub memory: usize,
}

impl Default for OnePass {
    fn default() -> OnePass {
        OnePass {
            threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .clamp(1, 4),
            // Small: what the threads hold adds to the coordinator's peak,
            // which comes at the report (every agent's evidence held).
            chunk: 64,
            memory: 64 << 10,
        }
    }
}

/// One chunk's rendered paths and their counts.
struct Chunk {
    bytes: Vec<u8>,
    summary: Summary,
}

impl StreamedReport<'_> {
    /// [`StreamedReport::write_json`] judging every path once, on several
    /// threads ([`OnePass::default`]), and filling in the report's summary
    /// as it goes: for a [`super::join_deferred`] report.
    pub fn write_json_once(&mut self, w: &mut dyn Write) -> io::Result<()> {
        self.write_json_with(w, OnePass::default())
    }

    /// [`StreamedReport::write_json_once`] with the work divided as `pass`
    /// says.
    pub fn write_json_with(&mut self, w: &mut dyn Write, pass: OnePass) -> io::Result<()> {
        let started = std::time::Instant::now();
        let (mut spill, summary) = self.judge_into(pass)?;
        self.report.summary = summary;
        tracing::debug!(
            paths = summary.paths,
            spilled = spill.len(),
            in_file = spill.in_file(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "paths judged"
        );
        // The report's head and tail around an empty `paths`, which the
        // spilled paths then fill.
        let mut frame = Vec::new();
        self.write_frame(&mut frame)?;
        let marker = b"\n  \"paths\": [";
        let at = frame
            .windows(marker.len())
            .position(|x| x == marker)
            .map(|k| k + marker.len())
            .ok_or_else(|| io::Error::other("the report has no paths field"))?;
        w.write_all(&frame[..at])?;
        if summary.paths > 0 {
            spill.copy_to(w)?;
            w.write_all(b"\n  ")?;
        }
        w.write_all(&frame[at..])?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "report written"
        );
        Ok(())
    }

    /// Judges every selected path once, `pass.threads` threads at a time,
    /// each taking every `threads`-th chunk; the chunks come back in plan
    /// order into the spill.
    fn judge_into(&self, pass: OnePass) -> io::Result<(Spill, Summary)> {
        let threads = pass.threads.max(1);
        let chunk = pass.chunk.max(1);
        let mut spill = Spill::new(pass.memory);
        let mut summary = Summary::default();
        std::thread::scope(|scope| {
            let mut inboxes = Vec::with_capacity(threads);
            for worker in 0..threads {
                // One chunk waiting per thread: the spill takes them in
                // order, so a thread ahead of the others waits.
                let (tx, rx) = mpsc::sync_channel::<io::Result<Chunk>>(1);
                inboxes.push(rx);
                scope.spawn(move || self.judge_chunks(worker, threads, chunk, &tx));
            }
            let mut next = 0usize;
            // Chunk `next` comes from its thread; once that thread has
            // hung up, it had no chunk `next`, and there is none after.
            while let Ok(got) = inboxes[next % threads].recv() {
                let got = got?;
                spill.push(&got.bytes)?;
                summary.paths += got.summary.paths;
                summary.ok += got.summary.ok;
                summary.violations += got.summary.violations;
                summary.errors += got.summary.errors;
                next += 1;
            }
            // An early return drops the inboxes: the threads stop at their
            // next send.
            Ok::<(), io::Error>(())
        })?;
        Ok((spill, summary))
    }

    /// One thread's part: the chunks `worker`, `worker + threads`, ...,
    /// each rendered as the paths' array holds it (a separator and four
    /// spaces' indent before each path), sent as it is complete.
    fn judge_chunks(
        &self,
        worker: usize,
        threads: usize,
        chunk: usize,
        tx: &mpsc::SyncSender<io::Result<Chunk>>,
    ) {
        let mut ordinal = 0usize;
        let mut current: Option<Chunk> = None;
        let mut scratch = Vec::new();
        let flow = self.plan.for_each_path(|p| {
            if !self.selected(p.index) {
                return ControlFlow::Continue(());
            }
            let at = ordinal;
            ordinal += 1;
            if (at / chunk) % threads != worker {
                return ControlFlow::Continue(());
            }
            let c = current.get_or_insert_with(|| Chunk {
                bytes: Vec::new(),
                summary: Summary::default(),
            });
            let r = self.judge(&p);
            c.summary.paths += 1;
            match r.verdict {
                Verdict::Ok => c.summary.ok += 1,
                Verdict::Violation => c.summary.violations += 1,
                Verdict::Error => c.summary.errors += 1,
            }
            scratch.clear();
            if let Err(e) = serde_json::to_writer_pretty(&mut scratch, &r) {
                let _ = tx.send(Err(e.into()));
                return ControlFlow::Break(());
            }
            c.bytes
                .extend_from_slice(if at == 0 { b"\n    " } else { b",\n    " });
            indent(&mut c.bytes, &scratch);
            if (at + 1) % chunk == 0 {
                let full = current.take().expect("filled above");
                if tx.send(Ok(full)).is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let (ControlFlow::Continue(()), Some(last)) = (flow, current) {
            let _ = tx.send(Ok(last));
        }
    }
}

/// `json` (one path rendered on its own) as it stands in the paths'
/// array: every line after the first four spaces further in. A rendered
/// string never holds a raw line break.
fn indent(out: &mut Vec<u8>, json: &[u8]) {
    let mut lines = json.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        out.extend_from_slice(first);
    }
    for line in lines {
        out.extend_from_slice(b"\n    ");
        out.extend_from_slice(line);
    }
}

/// Rendered paths in order: in memory up to a bound, then in a nameless
/// temporary file (or, where none can be made, in memory after all).
struct Spill {
    memory: Vec<u8>,
    bound: usize,
    file: Option<File>,
    len: u64,
}

impl Spill {
    fn new(bound: usize) -> Spill {
        Spill {
            memory: Vec::new(),
            bound,
            file: None,
            len: 0,
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn in_file(&self) -> bool {
        self.file.is_some()
    }

    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        if self.file.is_none() && self.memory.len() + bytes.len() > self.bound {
            match temporary() {
                Ok(mut f) => {
                    f.write_all(&self.memory)?;
                    self.memory = Vec::new();
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no temporary file for the report's paths; holding them in memory");
                    self.bound = usize::MAX;
                }
            }
        }
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => {
                self.memory.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn copy_to(&mut self, w: &mut dyn Write) -> io::Result<()> {
        let Some(f) = &mut self.file else {
            return w.write_all(&self.memory);
        };
        f.flush()?;
        f.rewind()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => w.write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A nameless file in the temporary directory (`O_TMPFILE`), or a named
/// one removed at once where the file system has no nameless ones.
fn temporary() -> io::Result<File> {
    use rustix::fs::{CWD, Mode, OFlags};
    let dir = std::env::temp_dir();
    let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
    match rustix::fs::openat(CWD, &dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(File::from(fd)),
        Err(_) => {
            let named = dir.join(format!(
                ".portcall-paths-{}-{}.tmp",
                std::process::id(),
                crate::control::random_id(4)
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&named)?;
            std::fs::remove_file(&named)?;
            Ok(f)
        }
    }
}
