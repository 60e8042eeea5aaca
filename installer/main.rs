use clap::Parser;

fn main() {
    let cli = vgpuctl::cli::Cli::parse();
    vgpuctl::logging::init(cli.global.verbose);
    let mut code = match vgpuctl::cli::run(cli) {
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
