//! An echo server on the engine: asyncio's "TCP Echo Server" (protocol-based) from the
//! "Transports and Protocols" page, on loopd.
//!
//! Listens on 127.0.0.1 (or `--host`), port 0 (or `--port`), prints the bound port alone
//! on its first line of stdout once it is accepting, and echoes every byte back until
//! SIGINT or SIGTERM, then exits with status 0 (2 on bad arguments, 1 if it cannot
//! serve, e.g. the port is taken). `bench/net.sh` measures it.
//!
//! ```text
//! cargo run --release --example echo_server -- --port 8888
//! ```

use std::io::Write;
use std::process::ExitCode;

use loopd::{Address, EventLoop, Protocol, ServerOptions, Transport};

/// asyncio's `EchoServerProtocol`: writes back whatever arrives.
#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.transport {
            // Fails only once the transport is closing: the data has nowhere to go.
            let _ = transport.write(data);
        }
    }
}

/// `--host H` and `--port P`; anything else is a usage error.
fn parse_args() -> Result<(String, u16), String> {
    let mut host = "127.0.0.1".to_string();
    let mut port = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--host" => host = value,
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("--port {value:?} is not a port number"))?
            }
            _ => return Err(format!("unknown argument {arg:?} (known: --host, --port)")),
        }
    }
    Ok((host, port))
}

fn main() -> ExitCode {
    let (host, port) = match parse_args() {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("echo_server: {usage}");
            return ExitCode::from(2);
        }
    };
    match serve(&host, port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo_server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Serves on `host:port` until SIGINT or SIGTERM.
fn serve(host: &str, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let lp = EventLoop::new()?;
    let server = lp.run_until_complete(lp.create_server(
        Echo::default,
        host,
        port,
        ServerOptions::default(),
    ))??;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let stopper = lp.clone();
        lp.add_signal_handler(sig, move || stopper.stop())?;
    }
    let Some(Address::Inet(bound)) = server.sockets().into_iter().next() else {
        return Err("the server has no TCP socket".into());
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", bound.port())?;
    stdout.flush()?;
    drop(stdout);
    lp.run_forever()?;
    server.close();
    lp.close()?;
    Ok(())
}
