//! The daemon as a process: health, reflection, info, one daemon per socket, SIGTERM.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use loopd_proto::pb;
use loopd_proto::{DaemonServiceClient, FutureServiceClient};
use support::{Daemon, subscribe};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SERVICES: [&str; 8] = [
    "loopd.v1.LoopService",
    "loopd.v1.SchedulerService",
    "loopd.v1.FutureService",
    "loopd.v1.EventService",
    "loopd.v1.DaemonService",
    "loopd.v1.ProcessService",
    "loopd.v1.SignalService",
    "loopd.v1.NetService",
];

#[tokio::test]
async fn health_is_serving_for_the_server_and_every_service() {
    let daemon = Daemon::start();
    let mut health = HealthClient::new(daemon.channel().await);
    for service in std::iter::once("").chain(SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_every_service() {
    let daemon = Daemon::start();
    let mut reflection = ServerReflectionClient::new(daemon.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn info_describes_the_daemon_and_its_socket_is_private() {
    let daemon = Daemon::start();
    let info = DaemonServiceClient::new(daemon.channel().await)
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.pid, daemon.pid());
    assert_eq!(info.loops, ["default"]);
    let default = loopd_proto::LoopServiceClient::new(daemon.channel().await)
        .get_loop(pb::GetLoopRequest::default())
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(default.creator_uid, unsafe { libc::geteuid() });
    assert_eq!(info.socket_path, daemon.socket.display().to_string());
    assert_eq!(info.limits.unwrap().event_ring_capacity, 65536);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.socket), 0o660);
    assert_eq!(mode(daemon.socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&daemon.dir.path().join("state")), 0o700);
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_fails_and_the_first_keeps_serving() {
    let daemon = Daemon::start();
    let (status, stderr) = daemon.start_second();
    let status = status.expect("the second daemon exits by itself");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(
        stderr.contains(&daemon.socket.display().to_string()),
        "{stderr}"
    );
    let info = DaemonServiceClient::new(daemon.channel().await)
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.pid, daemon.pid());
}

#[tokio::test]
async fn sigterm_ends_open_streams_with_unavailable_and_exits_zero() {
    let mut daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(subscribe(&channel, "").await);
    }
    let mut futures = FutureServiceClient::new(channel.clone());
    let id = futures
        .create_future(pb::CreateFutureRequest::default())
        .await
        .unwrap()
        .into_inner()
        .future_id;
    let waiting = tokio::spawn(async move {
        futures
            .wait_future(pb::WaitFutureRequest {
                r#loop: String::new(),
                future_id: id,
                timeout: None,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let sent = Instant::now();
    daemon.sigterm();
    for stream in &mut streams {
        let end = tokio::time::timeout(support::WAIT, async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the stream ended");
        let status = end.expect_err("ends with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let wait_status = waiting.await.unwrap().unwrap_err();
    assert_eq!(wait_status.code(), Code::Unavailable, "{wait_status:?}");
    let exit = tokio::task::spawn_blocking(move || daemon.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("exited within 5 s");
    assert!(exit.success(), "{exit:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn without_config_the_socket_and_state_follow_the_xdg_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (run, state) = (dir.path().join("run"), dir.path().join("state"));
    std::fs::create_dir(&run).unwrap();
    let mut child = support::spawn_bare(&[("XDG_RUNTIME_DIR", &run), ("XDG_STATE_HOME", &state)]);
    let socket = run.join("loopd/loopd.sock");
    support::wait_for_socket(&socket);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run.join("loopd")), 0o700);
    assert_eq!(mode(&socket), 0o660);
    assert_eq!(mode(&state.join("loopd")), 0o700);
    let _ = child.kill();
    let _ = child.wait();

    // LOOPD_SOCKET wins over XDG_RUNTIME_DIR.
    let chosen = dir.path().join("chosen/l.sock");
    let mut child = support::spawn_bare(&[
        ("XDG_RUNTIME_DIR", &run),
        ("XDG_STATE_HOME", &state),
        ("LOOPD_SOCKET", &chosen),
    ]);
    support::wait_for_socket(&chosen);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn reflection_v1alpha_is_served_too() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let daemon = Daemon::start();
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut answers = Alpha::new(daemon.channel().await)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(AlphaResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn a_stale_socket_left_by_a_crash_is_replaced() {
    let daemon = Daemon::start();
    let first = daemon.pid();
    let daemon = daemon.crash_and_restart();
    assert!(daemon.socket.exists());
    let info = DaemonServiceClient::new(daemon.channel().await)
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.pid, daemon.pid());
    assert_ne!(info.pid, first);
}
