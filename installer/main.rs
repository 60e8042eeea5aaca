use clap::Parser;

// The simulator is linked only with the `simulator` feature (on by default); without it the
// binary has no simulator code and refuses --simulate (exit 2).
#[cfg(feature = "simulator")]
mod simulator;

fn main() {
    let cli = vgpuctl::cli::Cli::parse();
    vgpuctl::logging::init(cli.global.verbose);
    #[cfg(feature = "simulator")]
    let opener = simulator::Simulator;
    #[cfg(not(feature = "simulator"))]
    let opener = vgpuctl::cli::RealOnly;
    let mut code = match vgpuctl::cli::run(cli, &opener) {
        Ok(code) => code as i32,
        Err(failure) => {
            eprintln!("vgpuctl: error: {failure}");
            failure.code as i32
        }
    };
    // Output that could not be written (a full device, an I/O error) fails a run that otherwise
    // succeeded; a closed pipe does not (the reader chose to stop reading).
    if let Some(e) = vgpuctl::out::error() {
        eprintln!("vgpuctl: error: {e}");
        if code == 0 {
            code = 1;
        }
    }
    std::process::exit(code);
}
