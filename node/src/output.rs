//! Standard output for `println!`/`print!` (see `main.rs`): a reader that
//! went away (`| head`) ends the command quietly.

/// What `println!` and `print!` (defined in `main.rs`) call.
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    print_text(format_args!("{args}\n"));
}

/// What `println!` and `print!` (defined in `main.rs`) call.
pub(crate) fn print_text(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = write!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Nowhere to say it but stderr; the command's outcome stands.
        eprintln!("safemeet: could not write the output: {e}");
    }
}
