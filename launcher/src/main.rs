//! `rank-launch`: see the library docs and `--help`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(rank_launch::app::main_impl())
}
