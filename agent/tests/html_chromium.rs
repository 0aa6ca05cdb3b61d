//! The HTML report as a browser lays it out: the demo's page (`portcall
//! demo --format html`, 14 loopback hosts in 6 zones), opened from a file in headless Chromium
//! at 1400 px and 800 px wide, must not overflow: not the page, not a table
//! cell, not the matrix or the zone graph. Screenshots of both widths are
//! left in `target/tmp/` for a human to look at.
//!
//! The page itself carries no script: the test checks a copy with a small
//! checking script appended, which writes what overflows into the title,
//! read back with `--dump-dom`. Chromium runs with background networking,
//! component updates and sync off, on `file://` only. Needs Debian's
//! `chromium`; without it the test prints `skipped: <reason>` and passes,
//! unless `PORTCALL_REQUIRE_LAB=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Sets the title to `OVERFLOW-CHECK none` or to what overflows. Cells that
/// truncate on purpose (`text-overflow: ellipsis`, full text in `title`)
/// are not overflow.
const CHECK: &str = r#"<script>
addEventListener('load', () => {
  const bad = [];
  const name = e => e.tagName.toLowerCase() + (e.className && e.className.baseVal === undefined ? '.' + e.className.split(' ').join('.') : '') + ' "' + (e.textContent || '').trim().slice(0, 30) + '"';
  const de = document.documentElement;
  if (de.scrollWidth > innerWidth) bad.push('page ' + de.scrollWidth + ' > ' + innerWidth);
  for (const e of document.querySelectorAll('section, td, th, .matrix-wrap, .graph-wrap')) {
    if (getComputedStyle(e).textOverflow === 'ellipsis') continue;
    if (e.scrollWidth > e.clientWidth + 1) bad.push(name(e) + ' ' + e.scrollWidth + ' > ' + e.clientWidth);
  }
  for (const e of document.querySelectorAll('section svg.graph, section table')) {
    const s = e.closest('section').getBoundingClientRect(), r = e.getBoundingClientRect();
    if (r.right > s.right + 1) bad.push(name(e) + ' right ' + Math.round(r.right) + ' > section ' + Math.round(s.right));
  }
  document.title = 'OVERFLOW-CHECK ' + (bad.length ? bad.join('; ') : 'none');
});
</script>"#;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// Chromium on one local file, nothing else: no network, a fresh profile.
fn browse(
    browser: &Path,
    profile: &Path,
    width: u32,
    height: u32,
    extra: &[&str],
    page: &Path,
) -> String {
    let out = Command::new("timeout")
        .arg("180")
        .arg(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the checking script found in `page` at `width`: `None` when nothing
/// overflows.
fn overflow(browser: &Path, dir: &Path, page: &Path, width: u32) -> Option<String> {
    inspect(browser, dir, page, width).0
}

/// What the checking script found in `page` at `width`, and the DOM it
/// left.
fn inspect(browser: &Path, dir: &Path, page: &Path, width: u32) -> (Option<String>, String) {
    let html = std::fs::read_to_string(page).expect("read page");
    let checked = dir.join(format!("checked-{width}.html"));
    std::fs::write(
        &checked,
        html.replace("</body>", &format!("{CHECK}</body>")),
    )
    .unwrap();
    let dom = browse(
        browser,
        &dir.join(format!("profile-{width}")),
        width,
        1000,
        &["--dump-dom"],
        &checked,
    );
    let start = dom.find("<title>OVERFLOW-CHECK ").unwrap_or_else(|| {
        panic!(
            "the checking script did not run at {width} px: {}",
            &dom[..dom.len().min(400)]
        )
    });
    let title = &dom[start + "<title>OVERFLOW-CHECK ".len()..];
    let title = &title[..title.find("</title>").expect("title end")];
    let title = title
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    ((title != "none").then_some(title), dom)
}

/// The demo's page: 14 loopback hosts in 6 zones.
fn render(dir: &Path) -> PathBuf {
    let page = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(["demo", "--format", "html", "--out"])
        .arg(&page)
        .stdin(Stdio::null())
        .output()
        .expect("run portcall demo");
    assert!(
        page.is_file(),
        "the demo wrote no page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    page
}

/// The demo's report as JSON, for tests to edit.
fn demo_json() -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(["demo", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("run portcall demo");
    serde_json::from_slice(&out.stdout).expect("demo JSON")
}

/// `report` (edited demo JSON) written to `dir/NAME.json` and rendered by
/// `portcall report --format html` into `dir/NAME.html`.
fn rerender(dir: &Path, report: &serde_json::Value, name: &str) -> PathBuf {
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_vec(report).unwrap()).unwrap();
    let page = dir.join(format!("{name}.html"));
    let out = Command::new(env!("CARGO_BIN_EXE_portcall"))
        .args(["report", "--format", "html", "--out"])
        .arg(&page)
        .arg(&json)
        .output()
        .expect("run portcall report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    page
}

fn browser_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        let why = "chromium not found (apt-get install chromium)";
        if std::env::var("PORTCALL_REQUIRE_LAB").as_deref() == Ok("1") {
            panic!("PORTCALL_REQUIRE_LAB=1 but {why}");
        }
        eprintln!("skipped: {why}");
    }
    found
}

#[test]
fn the_report_fits_1400_and_800_px_wide_in_chromium() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = render(dir.path());
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // The page beside its screenshots, for a human to read when it fails.
    let _ = std::fs::copy(&page, shots.join("report.html"));
    for width in [1400, 800] {
        let shot = shots.join(format!("report-{width}.png"));
        let _ = std::fs::remove_file(&shot);
        browse(
            &browser,
            &dir.path().join(format!("shot-{width}")),
            width,
            2600,
            &[&format!("--screenshot={}", shot.display())],
            &page,
        );
        assert!(shot.is_file(), "no screenshot at {}", shot.display());
        eprintln!("screenshot: {}", shot.display());
        if let Some(what) = overflow(&browser, dir.path(), &page, width) {
            panic!("the report overflows at {width} px: {what}");
        }
    }
}

/// A round gone badly: every must-be-open path of the demo a violation
/// with a long reason (another service answered, its first bytes shown,
/// a long host name without a place to break), re-rendered with `portcall
/// report`: still no overflow at either width. (Before reasons could
/// break anywhere, the page was 931 px wide in an 800 px window.)
#[test]
fn a_report_full_of_long_violations_fits_too() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut report = demo_json();
    for p in report["paths"].as_array_mut().unwrap() {
        if p["expect"] == "open" {
            p["verdict"] = "violation".into();
            p["observed"] = "wrong-service".into();
            p["detail"] = format!(
                "must be open, but wrong service: (a real service holds the port) the {} request got another protocol's answer; first bytes: PORTCALL-ERR {}.internal.example.com bad-line-of-a-rather-long-kind",
                p["service"].as_str().unwrap(),
                p["to"].as_str().unwrap()
            )
            .into();
        }
    }
    let page = rerender(dir.path(), &report, "bad");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::copy(&page, shots.join("report-violations.html"));
    for width in [1400, 800] {
        if let Some(what) = overflow(&browser, dir.path(), &page, width) {
            panic!("the report of violations overflows at {width} px: {what}");
        }
    }
}

/// Which of the matrix's two views a browser shows, written on the body
/// as `data-views` (`verdicts:block heat:none`).
const VIEWS: &str = r#"<script>
addEventListener('load', () => {
  const d = s => getComputedStyle(document.querySelector(s)).display;
  document.body.dataset.views = 'verdicts:' + d('section.verdicts') + ' heat:' + d('section.heat');
});
</script>"#;

/// A round that sampled (`check --samples 1000`): every must-be-open path
/// of the demo with figures (losses up to 100% either way, a target that
/// could not count, a path none of whose samples was answered), rendered
/// with `portcall report`. The loss and latency view is a tab, hidden
/// until chosen: the page fits at both widths with either tab chosen, and
/// choosing it (the radio input `checked`, as a click on its label does)
/// shows the heat map instead of the verdicts.
#[test]
fn a_report_with_quality_on_every_path_fits_in_both_views() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut report = demo_json();
    let mut sampled = 0;
    for (i, p) in report["paths"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        if p["expect"] != "open" {
            p["quality"] = serde_json::Value::Null;
            continue;
        }
        sampled += 1;
        let k = i as f64;
        let lost = (i % 7) as u32 * 17;
        let arrived = 1000 - lost;
        let answered = arrived - (i % 5) as u32 * 9;
        p["quality"] = match i % 11 {
            // A TCP target that could not count: the loss both ways.
            3 => serde_json::json!({"samples": 1000, "sent": 1000, "arrived": null,
                "answered": 880, "loss_forward_pct": null, "loss_return_pct": null,
                "rtt_ms": {"min": 0.05, "p50": 0.12, "p95": 0.4, "max": 3.5}, "jitter_ms": 0.03}),
            // Nothing came back.
            7 => serde_json::json!({"samples": 1000, "sent": 1000, "arrived": 0,
                "answered": 0, "loss_forward_pct": 100.0, "loss_return_pct": null,
                "rtt_ms": null, "jitter_ms": null}),
            _ => serde_json::json!({"samples": 1000, "sent": 1000, "arrived": arrived,
                "answered": answered,
                "loss_forward_pct": f64::from(lost) / 10.0,
                "loss_return_pct": (f64::from(arrived - answered) * 10000.0 / f64::from(arrived)).round() / 100.0,
                "rtt_ms": {"min": 0.9 + k, "p50": 12.5 + k, "p95": 180.25 + 3.0 * k, "max": 1200.0 + k},
                "jitter_ms": 4.5}),
        };
    }
    assert!(
        sampled > 20,
        "only {sampled} must-be-open paths in the demo"
    );
    let page = rerender(dir.path(), &report, "sampled");
    let html = std::fs::read_to_string(&page).unwrap();
    let (verdicts, heat) = (r#"id="view-verdicts" checked>"#, r#"id="view-heat">"#);
    assert!(html.contains(verdicts) && html.contains(heat), "no tabs");
    let chosen = dir.path().join("sampled-heat.html");
    std::fs::write(
        &chosen,
        html.replace(verdicts, r#"id="view-verdicts">"#)
            .replace(heat, r#"id="view-heat" checked>"#)
            .replace("</body>", &format!("{VIEWS}</body>")),
    )
    .unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::copy(&chosen, shots.join("report-heat.html"));
    for width in [1400, 800] {
        if let Some(what) = overflow(&browser, dir.path(), &page, width) {
            panic!("the sampled report overflows at {width} px: {what}");
        }
        let (what, dom) = inspect(&browser, dir.path(), &chosen, width);
        if let Some(what) = what {
            panic!("the loss and latency view overflows at {width} px: {what}");
        }
        assert!(
            dom.contains(r#"data-views="verdicts:none heat:block""#),
            "the heat map is not the view shown at {width} px: {}",
            &dom[..dom.len().min(600)]
        );
        let shot = shots.join(format!("report-heat-{width}.png"));
        browse(
            &browser,
            &dir.path().join(format!("heat-shot-{width}")),
            width,
            1600,
            &[&format!("--screenshot={}", shot.display())],
            &chosen,
        );
    }
}

/// The check itself: a page whose graph is wider than the window, and one
/// with a table cell too narrow for its text, are both caught.
#[test]
fn the_overflow_check_catches_a_page_that_overflows() {
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = render(dir.path());
    let html = std::fs::read_to_string(&page).unwrap();
    let wide = dir.path().join("wide.html");
    std::fs::write(
        &wide,
        html.replace("max-width: 100%; height: auto;", "min-width: 1200px;"),
    )
    .unwrap();
    let what = overflow(&browser, dir.path(), &wide, 800).expect("a 1200 px graph fits 800 px");
    assert!(what.contains("svg") || what.contains("page"), "{what}");
    let cell = dir.path().join("cell.html");
    std::fs::write(
        &cell,
        html.replace("</body>", r#"<section><table><tr><td style="width:40px;max-width:40px;overflow:hidden;white-space:nowrap">a-host-name-far-too-long</td></tr></table></section></body>"#),
    )
    .unwrap();
    let what = overflow(&browser, dir.path(), &cell, 1400).expect("a clipped cell passes");
    assert!(what.contains("a-host-name-far-too-long"), "{what}");
}
