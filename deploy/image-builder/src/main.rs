//! `amphi-image`: builds an OCI image tarball for `ctr image import --base-name <repo>`.
//!
//! ```text
//! amphi-image wasm hello.wat --name localhost/hello:test -o hello.tar \
//!     [--entrypoint-arg ARG]... [--env K=V]... [--file HOST:CONTAINER]... [--platform host|wasi/wasm]
//! amphi-image wasm-artifact hello.wasm --name localhost/hello-art:test -o art.tar
//! amphi-image dir ./rootfs --name localhost/app:test -o app.tar --entrypoint /bin/app [--cmd ARG]...
//! ctr image import --base-name localhost/hello hello.tar
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use amphi_image::{
    DirImageOptions, Error, ImageName, Layout, Platform, WasmImageOptions, dir_image,
    parse_file_spec, wasm_artifact, wasm_image,
};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "amphi-image",
    version,
    about = "Build OCI image tarballs (for `ctr image import --base-name <repository>`) from a \
             .wasm/.wat module or a directory",
    after_help = "Import the result with: ctr image import --base-name <repository> <out.tar>\n\
                  (the repository is the --name without its :tag)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A single-layer image holding the module at /<stem>.wasm (WAT is compiled first) and
    /// running it as the entrypoint.
    ///
    /// The default platform is linux/<host arch>, so containerd unpacks the image on import
    /// like any other; amphi recognises the module by its bytes. `--platform wasi/wasm`
    /// writes os "wasip1", architecture "wasm" instead: containerd then only unpacks it when
    /// asked for that platform (`ctr image import --platform wasip1/wasm` or
    /// `--all-platforms`, and a CRI configured to unpack it).
    Wasm {
        /// The module: a .wasm binary (core module or component) or .wat text.
        module: PathBuf,
        #[command(flatten)]
        out: Output,
        /// An argument after the module in the entrypoint (repeatable).
        #[arg(
            long = "entrypoint-arg",
            value_name = "ARG",
            allow_hyphen_values = true
        )]
        entrypoint_args: Vec<String>,
        /// An environment entry KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Also put the host file or directory HOST at CONTAINER (absolute) (repeatable).
        #[arg(long = "file", value_name = "HOST:CONTAINER")]
        files: Vec<String>,
        /// host (linux/<host arch>), linux/<arch>, or wasi/wasm.
        #[arg(long, default_value = "host")]
        platform: String,
    },
    /// The CNCF TAG-Runtime Wasm OCI artifact: config application/vnd.wasm.config.v0+json
    /// (os wasip1 for a module, wasip2 for a component) and one application/wasm layer.
    ///
    /// containerd stores it on import but `ctr` cannot unpack or run it (see
    /// deploy/image-builder/README.md).
    WasmArtifact {
        /// The module: a .wasm binary (core module or component) or .wat text.
        module: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// A single-layer Linux image of a directory tree.
    Dir {
        /// The root file system.
        rootfs: PathBuf,
        #[command(flatten)]
        out: Output,
        /// The entrypoint program and its leading arguments (repeat for more words).
        #[arg(long, value_name = "ARG", required = true, allow_hyphen_values = true)]
        entrypoint: Vec<String>,
        /// The default command (arguments after the entrypoint) (repeatable).
        #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
        cmd: Vec<String>,
        /// An environment entry KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// The working directory.
        #[arg(long = "workdir", default_value = "/")]
        working_dir: String,
    },
}

#[derive(clap::Args, Debug)]
struct Output {
    /// The image name, <repository>:<tag> (e.g. localhost/hello:test).
    #[arg(long)]
    name: String,
    /// Where to write the OCI layout tarball.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amphi-image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    let (layout, output) = match command {
        Command::Wasm {
            module,
            out,
            entrypoint_args,
            env,
            files,
            platform,
        } => {
            let mut opts =
                WasmImageOptions::new(ImageName::parse(&out.name)?, Platform::parse(&platform)?);
            opts.entrypoint_args = entrypoint_args;
            opts.env = env;
            opts.files = files
                .iter()
                .map(|f| parse_file_spec(f))
                .collect::<Result<_, _>>()?;
            (wasm_image(&module, &opts)?, out.output)
        }
        Command::WasmArtifact { module, out } => (
            wasm_artifact(&module, &ImageName::parse(&out.name)?)?,
            out.output,
        ),
        Command::Dir {
            rootfs,
            out,
            entrypoint,
            cmd,
            env,
            working_dir,
        } => {
            let opts = DirImageOptions {
                name: ImageName::parse(&out.name)?,
                entrypoint,
                cmd,
                env,
                working_dir,
            };
            (dir_image(&rootfs, &opts)?, out.output)
        }
    };
    layout.write_tar(&output)?;
    report(&layout, &output);
    Ok(())
}

fn report(layout: &Layout, output: &std::path::Path) {
    let name = layout.name();
    println!(
        "wrote {} ({}, manifest {})",
        output.display(),
        name.full(),
        layout.manifest_digest()
    );
    println!(
        "import: ctr image import --base-name {} {}",
        name.repository,
        output.display()
    );
}
