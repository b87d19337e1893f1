//! `ocimount generate completions SHELL` and `ocimount generate man DIR`:
//! shell completions and man pages made from the clap definitions, so they
//! never drift from `--help`. `scripts/install.sh` puts them in place.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Subcommand};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generate,
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Write the completion script for SHELL to stdout
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write ocimount.1 and a page per subcommand (ocimount-mount.1, …) into DIR
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let mut cmd = Cli::command();
    match &args.what {
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "ocimount", &mut std::io::stdout());
            Ok(())
        }
        Generate::Man { dir } => {
            std::fs::create_dir_all(dir).at(dir)?;
            cmd.build();
            write_page(dir, "ocimount", cmd.clone())?;
            for sub in cmd
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                let name = format!("ocimount-{}", sub.get_name());
                write_page(dir, &name, sub.clone().name(name.clone()))?;
            }
            Ok(())
        }
    }
}

fn write_page(dir: &Path, name: &str, cmd: clap::Command) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| Error::io(&path, e))?;
    std::fs::write(&path, page).at(&path)
}
