//! `safemeet man`: manual pages from the CLI's own definition, so they
//! never disagree with `--help`.

use std::path::PathBuf;

use anyhow::Context;

use crate::failure::Failure;

/// `safemeet completions SHELL`: the script, or with `--json` the script
/// in a JSON object.
pub(crate) fn completions(
    mut command: clap::Command,
    shell: clap_complete::Shell,
    json: bool,
) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "safemeet", &mut script);
    let script = String::from_utf8_lossy(&script);
    if json {
        return crate::messenger::print_json(
            &serde_json::json!({ "shell": shell.to_string(), "script": script }),
        );
    }
    print!("{script}");
    Ok(())
}

/// Prints safemeet.1, or writes it and a page per command into `dir`.
pub(crate) fn man(command: clap::Command, dir: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .context("rendering the manual page")?;
        if json {
            return crate::messenger::print_json(
                &serde_json::json!({ "page": String::from_utf8_lossy(&page) }),
            );
        }
        print!("{}", String::from_utf8_lossy(&page));
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut pages = vec![("safemeet".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        let name = format!("safemeet-{}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone()
                .display_name(name)
                .bin_name(format!("safemeet {}", sub.get_name())),
        ));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .with_context(|| format!("rendering {name}"))?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    if json {
        crate::messenger::print_json(&serde_json::json!({ "written": written }))
    } else {
        for p in &written {
            println!("{p}");
        }
        Ok(())
    }
}
