//! The `launch-gen` binary: all logic lives in the library, see [`launch_gen::cli`].

fn main() {
    // The one place where launch-gen exits (clippy's `exit` lint allows it in `main`).
    std::process::exit(launch_gen::cli::main_impl());
}
