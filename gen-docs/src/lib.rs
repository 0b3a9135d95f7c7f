//! `slotctl`'s man pages and shell completions, generated from the same clap
//! definitions the binary parses with ([`slotctl::cli::command`]), so they
//! never drift from `--help`.
//!
//! [`generate`] writes, under an output directory:
//! - `man/slotctl.1` and one `man/slotctl-<sub>.1` per subcommand, nested
//!   ones joined by dashes (`slotctl-image-pack.1`), by `clap_mangen`;
//! - `man/slotctl.toml.5`, the config file's page: written by hand
//!   (`man/slotctl.toml.5` in this crate), since the keys live in serde
//!   structs that clap knows nothing of; the workspace test
//!   `tests/tests/mandocs.rs` holds it to the config parser's own key list;
//! - `completions/slotctl.bash`, `completions/_slotctl` (zsh) and
//!   `completions/slotctl.fish`, by `clap_complete`.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// The config file's man page (section 5), written by hand.
pub const CONFIG_PAGE: &str = include_str!("../man/slotctl.toml.5");

/// The shells a completion script is written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Every man page (section 1 pages, `slotctl-dbus.8`, then `slotctl.toml.5`).
    pub man_pages: Vec<PathBuf>,
    /// One completion script per shell of [`SHELLS`], in that order.
    pub completions: Vec<PathBuf>,
}

/// Write the man pages into `out/man` and the completion scripts into
/// `out/completions` (both created if missing; existing files replaced).
pub fn generate(out: &Path) -> io::Result<Generated> {
    // Bad input first, before anything is created.
    let date = page_date()?;
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    for dir in [&man_dir, &comp_dir] {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    let mut done = Generated::default();
    let source = format!("slotctl {}", env!("CARGO_PKG_VERSION"));

    // As clap_mangen::generate_to does: no `help` subcommand page, and the
    // global options (--disk, --json, ...) propagated to every subcommand.
    let mut cmd = slotctl::cli::command().disable_help_subcommand(true);
    cmd.build();
    let title = Title {
        date: &date,
        source: &source,
    };
    write_pages(&cmd, None, &title, &man_dir, &mut done.man_pages)?;
    // The D-Bus service's page: a daemon, section 8.
    let dbus = clap_mangen::Man::new(slotctl_dbus::cli::command())
        .section("8")
        .date(&date)
        .source(source.as_str())
        .manual("slotctl manual");
    let dbus_page = man_dir.join(dbus.get_filename());
    let mut page = Vec::new();
    dbus.render(&mut page)?;
    writeln!(
        page,
        ".SH \"SEE ALSO\"\n\\fBslotctl\\fR(1), \\fBslotctl.toml\\fR(5), \\fBbusctl\\fR(1)"
    )?;
    std::fs::write(&dbus_page, page)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dbus_page.display())))?;
    done.man_pages.push(dbus_page);
    let config_page = man_dir.join("slotctl.toml.5");
    let text = CONFIG_PAGE
        .replace("@DATE@", &date)
        .replace("@SOURCE@", &source);
    std::fs::write(&config_page, text)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", config_page.display())))?;
    done.man_pages.push(config_page);

    let mut cmd = slotctl::cli::command();
    for shell in SHELLS {
        done.completions.push(clap_complete::generate_to(
            shell, &mut cmd, "slotctl", &comp_dir,
        )?);
    }
    Ok(done)
}

/// The `.TH` line's date and source of every page.
struct Title<'a> {
    date: &'a str,
    source: &'a str,
}

/// The pages' date, `YYYY-MM-DD` in UTC: that of `SOURCE_DATE_EPOCH` when
/// set (reproducible builds: Debian's packaging sets it), else today.
/// clap_mangen leaves an unset date out of `.TH` altogether, which shifts
/// the source and manual name into the wrong fields, so there always is one.
fn page_date() -> io::Result<String> {
    use slotctl::feed::time::Timestamp;
    let t = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Timestamp(v.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"),
            )
        })?),
        Err(_) => Timestamp::now(),
    };
    // Display is RFC 3339 (`2026-12-02T13:49:31Z`): keep the date.
    Ok(t.to_string()[..10].to_string())
}

/// The page of `cmd` (a built command: its name is already the dashed
/// display name, e.g. `slotctl-image-pack`), then those of its visible
/// subcommands.
fn write_pages(
    cmd: &clap::Command,
    parent: Option<&str>,
    title: &Title,
    dir: &Path,
    pages: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .date(title.date)
        .source(title.source)
        .manual("slotctl manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    // SEE ALSO: the parent command's page and the config file's.
    let mut see_also = Vec::new();
    if let Some(parent) = parent {
        see_also.push(format!("\\fB{}\\fR(1)", roff_escape(parent)));
    }
    see_also.push("\\fBslotctl.toml\\fR(5)".to_string());
    writeln!(page, ".SH \"SEE ALSO\"\n{}", see_also.join(", "))?;
    std::fs::write(&path, page)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    pages.push(path);

    let name = page_name(cmd);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, Some(&name), title, dir, pages)?;
    }
    Ok(())
}

/// A built command's page name: `slotctl`, `slotctl-install`,
/// `slotctl-image-pack`.
pub fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// Dashes in a name are hyphens to roff unless escaped.
fn roff_escape(s: &str) -> String {
    s.replace('-', "\\-")
}
