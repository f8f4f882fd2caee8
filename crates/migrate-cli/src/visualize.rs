//! `--visualize`: the component graph as Graphviz DOT, or an image drawn by `dot`.

use std::io::Write;
use std::process::{Command, Stdio};

use migrate_core::{MigrationModule, StatusBoard, SystemBuilder};

use crate::cli::VisualFormat;
use crate::exit::{CliError, SUCCESS};

/// The graph of the system `db-migrate` runs: the core's components with the terminal board in
/// place of the core's status board.
pub fn dot() -> Result<String, CliError> {
    let graph = SystemBuilder::<MigrationModule>::new()
        .with_override::<dyn StatusBoard>(
            Box::new(migrate_core::EventBoard::discard()),
            crate::board::IMPLEMENTATION,
        )
        .graph()
        .map_err(|e| CliError::fatal(&e))?;
    Ok(graph.to_dot())
}

/// Prints DOT on stdout, or writes `db-migrate-components.svg|png` with `dot`.
pub fn run(format: VisualFormat) -> Result<u8, CliError> {
    let dot_text = dot()?;
    let extension = match format {
        VisualFormat::Dot => {
            #[allow(clippy::print_stdout)]
            {
                print!("{dot_text}");
            }
            return Ok(SUCCESS);
        }
        VisualFormat::Svg => "svg",
        VisualFormat::Png => "png",
    };
    let path = format!("db-migrate-components.{extension}");
    let mut child = Command::new("dot")
        .arg(format!("-T{extension}"))
        .arg("-o")
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CliError::Usage(format!(
                    "--visualize={extension} needs the `dot` program from Graphviz, which is not \
                     installed (apt-get install graphviz); --visualize alone prints DOT"
                ))
            } else {
                CliError::Fatal(format!("while starting dot: {e}"))
            }
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(dot_text.as_bytes())
        .map_err(|e| CliError::Fatal(format!("while writing to dot: {e}")))?;
    let status = child
        .wait()
        .map_err(|e| CliError::Fatal(format!("while waiting for dot: {e}")))?;
    if !status.success() {
        return Err(CliError::Fatal(format!("dot failed ({status})")));
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("Wrote the component graph to {path}");
    }
    Ok(SUCCESS)
}
