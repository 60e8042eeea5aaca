use clap::Parser;

fn main() {
    let cli = vgpuctl::cli::Cli::parse();
    vgpuctl::logging::init(cli.global.verbose);
    let code = match vgpuctl::cli::run(cli) {
        Ok(code) => code as i32,
        Err(failure) => {
            eprintln!("vgpuctl: error: {failure}");
            failure.code as i32
        }
    };
    std::process::exit(code);
}
