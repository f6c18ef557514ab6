//! `hutchctl completions bash|zsh`: the shell completion scripts, generated
//! from the same clap definition as `--help` (clap_complete), so they never
//! fall behind the commands. The package installs both.

use clap::CommandFactory;

use crate::Cli;

/// The shells a completion script is made for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
}

/// The script for `shell`, as text.
pub fn script(shell: Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "hutchctl", &mut out)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "hutchctl", &mut out)
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Prints the script for `shell` on stdout.
pub fn print(shell: Shell) -> anyhow::Result<i32> {
    print!("{}", script(shell));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both scripts name hutchctl and offer its subcommands (template's own too).
    #[test]
    fn scripts_offer_the_subcommands() {
        let bash = script(Shell::Bash);
        assert!(bash.contains("complete -F _hutchctl"), "{bash}");
        let zsh = script(Shell::Zsh);
        assert!(zsh.starts_with("#compdef hutchctl"), "{zsh}");
        for word in ["template", "stats", "enter", "completions", "update"] {
            assert!(bash.contains(word), "bash lacks {word}");
            assert!(zsh.contains(word), "zsh lacks {word}");
        }
    }
}
