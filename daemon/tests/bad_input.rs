//! Bad input gets the right status, a message naming the bad value, and the daemon keeps
//! serving.

mod support;

use bytes::{Buf, BufMut};
use loopd_proto::pb;
use loopd_proto::{
    DaemonServiceClient, FutureServiceClient, LoopServiceClient, SchedulerServiceClient,
};
use pb::call_later_request::After;
use prost::Message;
use support::{Daemon, emit, tcp_server};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Asserts `result` failed with `code` and a message containing `needle`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("the request should fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(needle),
        "{:?} does not name {needle:?}",
        status.message()
    );
}

fn later(loop_name: &str, after: Option<After>) -> pb::CallLaterRequest {
    pb::CallLaterRequest {
        r#loop: loop_name.into(),
        after,
        action: None,
        request_id: String::new(),
    }
}

#[tokio::test]
async fn bad_times_are_invalid_arguments_naming_the_value() {
    let daemon = Daemon::start();
    let mut client = SchedulerServiceClient::new(daemon.channel().await);
    for (secs, needle) in [
        (f64::NAN, "NaN"),
        (f64::NEG_INFINITY, "-inf"),
        (1e300, "1e300"),
    ] {
        let r = client
            .call_later(later("", Some(After::DelaySeconds(secs))))
            .await;
        assert_status(r, Code::InvalidArgument, needle);
        let at = pb::CallAtRequest {
            when: secs,
            ..Default::default()
        };
        assert_status(client.call_at(at).await, Code::InvalidArgument, needle);
    }
    assert_status(
        client.call_later(later("", None)).await,
        Code::InvalidArgument,
        "delay",
    );
    let bad_duration = prost_types::Duration {
        seconds: 1,
        nanos: -5,
    };
    let r = client
        .call_later(later("", Some(After::Delay(bad_duration))))
        .await;
    assert_status(r, Code::InvalidArgument, "nanos: -5");
    let wall = pb::CallAtWallTimeRequest::default();
    assert_status(
        client.call_at_wall_time(wall).await,
        Code::InvalidArgument,
        "when",
    );
}

#[tokio::test]
async fn unknown_loops_handles_and_futures_are_not_found() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut sched = SchedulerServiceClient::new(channel.clone());
    let mut futures = FutureServiceClient::new(channel.clone());
    let r = sched
        .call_later(later("nowhere", Some(After::DelaySeconds(1.0))))
        .await;
    assert_status(r, Code::NotFound, "nowhere");
    let get = pb::GetHandleRequest {
        r#loop: String::new(),
        handle_id: 987_654,
    };
    assert_status(sched.get_handle(get).await, Code::NotFound, "987654");
    let cancel = pb::CancelHandleRequest {
        r#loop: String::new(),
        handle_id: 876_543,
    };
    assert_status(sched.cancel_handle(cancel).await, Code::NotFound, "876543");
    let get = pb::GetFutureRequest {
        r#loop: String::new(),
        future_id: 765_432,
    };
    assert_status(futures.get_future(get).await, Code::NotFound, "765432");
    let resolve = pb::CallSoonRequest {
        r#loop: String::new(),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::ResolveFuture(pb::ResolveFutureAction {
                future_id: 654_321,
                value: vec![],
            })),
        }),
        request_id: String::new(),
    };
    assert_status(sched.call_soon(resolve).await, Code::NotFound, "654321");
    let loop_get = pb::GetLoopRequest {
        r#loop: "ghost".into(),
    };
    let r = LoopServiceClient::new(channel).get_loop(loop_get).await;
    assert_status(r, Code::NotFound, "ghost");
}

#[tokio::test]
async fn a_closed_loop_is_a_failed_precondition() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut loops = LoopServiceClient::new(channel.clone());
    let name = "shut";
    loops
        .create_loop(pb::CreateLoopRequest {
            r#loop: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    support::stop_and_close(&mut loops, name).await;
    let create = pb::CreateFutureRequest {
        r#loop: name.into(),
        request_id: String::new(),
    };
    let r = FutureServiceClient::new(channel.clone())
        .create_future(create)
        .await;
    assert_status(r, Code::FailedPrecondition, name);
    let r = SchedulerServiceClient::new(channel.clone())
        .call_later(later(name, Some(After::DelaySeconds(0.0))))
        .await;
    assert_status(r, Code::FailedPrecondition, name);
    let r = loops
        .start_loop(pb::StartLoopRequest {
            r#loop: name.into(),
        })
        .await;
    assert_status(r, Code::FailedPrecondition, name);
}

#[tokio::test]
async fn oversized_payloads_and_messages_are_resource_exhausted() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut sched = SchedulerServiceClient::new(channel.clone());
    let payload = vec![7u8; 70_000];
    let soon = pb::CallSoonRequest {
        r#loop: String::new(),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::EmitEvent(pb::EmitEventAction {
                tag: "big".into(),
                payload,
            })),
        }),
        request_id: String::new(),
    };
    assert_status(
        sched.call_soon(soon).await,
        Code::ResourceExhausted,
        "70000",
    );
    let result = pb::SetResultRequest {
        r#loop: String::new(),
        future_id: 1,
        result: vec![0; 65_537],
    };
    let r = FutureServiceClient::new(channel.clone())
        .set_result(result)
        .await;
    assert_status(r, Code::ResourceExhausted, "65537");

    // Larger than the gRPC message limit (4 MiB): refused before it is decoded.
    let huge = pb::SetResultRequest {
        r#loop: String::new(),
        future_id: 1,
        result: vec![0; 5 * 1024 * 1024],
    };
    let mut futures =
        FutureServiceClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
    let r = futures.set_result(huge).await;
    assert_status(r, Code::ResourceExhausted, "4194304");

    let long_tag = pb::CallSoonRequest {
        action: emit(&"t".repeat(300)),
        ..Default::default()
    };
    assert_status(
        sched.call_soon(long_tag).await,
        Code::InvalidArgument,
        "300",
    );
    let batch = pb::ScheduleBatchRequest {
        r#loop: String::new(),
        entries: vec![
            pb::ScheduleEntry {
                when: Some(pb::schedule_entry::When::Soon(())),
                action: None,
                request_id: String::new(),
            },
            pb::ScheduleEntry::default(),
        ],
    };
    assert_status(
        sched.schedule_batch(batch).await,
        Code::InvalidArgument,
        "entry 1",
    );
    still_serving(&channel).await;
}

/// Sends pre-encoded bytes as the request message, whatever they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn still_serving(channel: &Channel) {
    DaemonServiceClient::new(channel.clone())
        .get_info(pb::GetInfoRequest {})
        .await
        .expect("the daemon still serves");
}

#[tokio::test]
async fn malformed_protobuf_bytes_are_refused_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let garbage: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff],       // a truncated varint tag
        &[0x0a, 0x7f, b'x'],             // a string field claiming 127 bytes, with 1
        &[0x12, 0x02, 0xc3, 0x28, 0x00], // invalid UTF-8 in a string field
    ];
    for bytes in garbage {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/loopd.v1.SchedulerService/CallLater");
        let result = grpc
            .unary(tonic::Request::new(bytes.to_vec()), path, RawCodec)
            .await;
        let status = result.expect_err("garbage is refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bytes:?}: {status:?}"
        );
        assert!(status.message().contains("decode"), "{}", status.message());
    }
    still_serving(&channel).await;
}

#[tokio::test]
async fn quotas_bound_what_one_caller_holds() {
    let daemon = Daemon::start_with(
        "[limits]\nmax_pending_handles_per_caller = 3\nmax_pending_futures_per_caller = 1\n",
    );
    let channel = daemon.channel().await;
    let mut sched = SchedulerServiceClient::new(channel.clone());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = sched
            .call_later(later("", Some(After::DelaySeconds(60.0))))
            .await;
        ids.push(r.unwrap().into_inner().handle_id);
    }
    let r = sched
        .call_later(later("", Some(After::DelaySeconds(60.0))))
        .await;
    assert_status(r, Code::ResourceExhausted, "quota is 3");
    sched
        .cancel_handle(pb::CancelHandleRequest {
            r#loop: String::new(),
            handle_id: ids[0],
        })
        .await
        .unwrap();
    sched
        .call_later(later("", Some(After::DelaySeconds(60.0))))
        .await
        .expect("cancelling gave the slot back");

    let mut futures = FutureServiceClient::new(channel);
    let first = futures
        .create_future(pb::CreateFutureRequest::default())
        .await
        .unwrap()
        .into_inner()
        .future_id;
    let r = futures
        .create_future(pb::CreateFutureRequest::default())
        .await;
    assert_status(r, Code::ResourceExhausted, "pending futures");
    futures
        .set_result(pb::SetResultRequest {
            r#loop: String::new(),
            future_id: first,
            result: vec![],
        })
        .await
        .unwrap();
    futures
        .create_future(pb::CreateFutureRequest::default())
        .await
        .expect("a done future gave the slot back");
}

// ---------------------------------------------------------------------------------------
// The sweep: every RPC of every service, listed from the compiled descriptors, gets
// hostile requests from one table; each must fail at once with the expected code and a
// message naming the bad value, and the daemon must still serve afterwards.
// ---------------------------------------------------------------------------------------

/// Every RPC of `package loopd.v1`, as `Service/Method`, with whether the client streams.
fn every_rpc() -> std::collections::BTreeMap<String, bool> {
    let set = prost_types::FileDescriptorSet::decode(loopd_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors decode");
    let mut rpcs = std::collections::BTreeMap::new();
    for file in set.file.iter().filter(|f| f.package() == "loopd.v1") {
        for service in &file.service {
            for method in &service.method {
                let name = format!("{}/{}", service.name(), method.name());
                rpcs.insert(name, method.client_streaming());
            }
        }
    }
    rpcs
}

/// One hostile request and the answer it must get.
struct Case {
    /// `Service/Method`.
    rpc: &'static str,
    /// The request messages, encoded (several for client streams, maybe none).
    messages: Vec<Vec<u8>>,
    /// What the request is, for failure messages.
    shown: String,
    code: Code,
    /// A piece of the status message: the bad field or value.
    needle: String,
}

/// The start of a long description, for failure messages.
fn short(text: String) -> String {
    text.chars().take(200).collect()
}

/// A case of one request message.
fn case<M: Message + std::fmt::Debug>(
    rpc: &'static str,
    request: M,
    code: Code,
    needle: impl Into<String>,
) -> Case {
    Case {
        rpc,
        messages: vec![request.encode_to_vec()],
        shown: short(format!("{request:?}")),
        code,
        needle: needle.into(),
    }
}

/// A case of several request messages (none, for a stream opened and never written).
fn case_stream<M: Message + std::fmt::Debug>(
    rpc: &'static str,
    requests: Vec<M>,
    code: Code,
    needle: impl Into<String>,
) -> Case {
    Case {
        rpc,
        messages: requests.iter().map(|m| m.encode_to_vec()).collect(),
        shown: short(format!("{requests:?}")),
        code,
        needle: needle.into(),
    }
}

/// A case of raw bytes as the one request message.
fn case_bytes(rpc: &'static str, bytes: &[u8], code: Code, needle: &str) -> Case {
    Case {
        rpc,
        messages: vec![bytes.to_vec()],
        shown: format!("bytes {bytes:?}"),
        code,
        needle: needle.into(),
    }
}

/// How a call ended.
#[derive(Debug)]
enum Outcome {
    Failed(Status),
    /// The daemon answered a message: the request was accepted.
    Answered,
    /// The response stream ended OK without a message.
    Ended,
    /// Nothing within the bound.
    Hung,
}

/// Calls `rpc` with `messages`; a client stream stays open after them, as real clients
/// keep it, so a daemon waiting for more instead of answering shows as `Hung`.
async fn call(channel: &Channel, rpc: &str, messages: Vec<Vec<u8>>, keep_open: bool) -> Outcome {
    use futures_util::StreamExt;
    let run = async {
        let mut grpc = tonic::client::Grpc::new(channel.clone())
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::try_from(format!("/loopd.v1.{rpc}"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let outbound = futures_util::stream::iter(messages);
        let response = if keep_open {
            let open = outbound.chain(futures_util::stream::pending());
            grpc.streaming(tonic::Request::new(open), path, RawCodec)
                .await?
        } else {
            grpc.streaming(tonic::Request::new(outbound), path, RawCodec)
                .await?
        };
        response.into_inner().message().await
    };
    match tokio::time::timeout(support::WAIT, run).await {
        Err(_) => Outcome::Hung,
        Ok(Err(status)) => Outcome::Failed(status),
        Ok(Ok(Some(_))) => Outcome::Answered,
        Ok(Ok(None)) => Outcome::Ended,
    }
}

/// The daemon answers a trivial RPC, and the default loop's thread a request too.
async fn serving(channel: &Channel) -> Result<(), String> {
    let trivial = async {
        DaemonServiceClient::new(channel.clone())
            .get_info(pb::GetInfoRequest {})
            .await?;
        LoopServiceClient::new(channel.clone())
            .get_time(pb::GetTimeRequest::default())
            .await?;
        Ok::<_, Status>(())
    };
    match tokio::time::timeout(support::WAIT, trivial).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(format!("the daemon no longer serves: {status:?}")),
        Err(_) => Err("the daemon no longer answers".into()),
    }
}

/// Runs `case`; an error says what went wrong.
async fn check(channel: &Channel, streaming: bool, case: Case) -> Result<(), String> {
    let Case {
        rpc,
        messages,
        shown,
        code,
        needle,
    } = case;
    let what = format!("{rpc} {shown}");
    // A stream given no message is half-closed: an open idle stream just waits.
    let keep_open = streaming && !messages.is_empty();
    match call(channel, rpc, messages, keep_open).await {
        Outcome::Failed(status) if status.code() == code && status.message().contains(&needle) => {}
        Outcome::Failed(status) => {
            return Err(format!(
                "{what}: want {code:?} naming {needle:?}, got {:?} {:?}",
                status.code(),
                status.message()
            ));
        }
        other => return Err(format!("{what}: want {code:?}, got {other:?}")),
    }
    serving(channel)
        .await
        .map_err(|e| format!("after {what}: {e}"))
}

/// Resources the hostile requests aim at: real ids, so that checks past the lookup run.
struct Fixtures {
    server_id: u64,
    transport_id: u64,
    endpoint_id: u64,
    process_id: u64,
    /// A FIFO opened for reading.
    fifo_id: u64,
    /// A regular file (not a FIFO).
    file: String,
    /// A certificate and its key, PEM.
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// A closed loop the sweep aims at too.
const CLOSED: &str = "shut";

async fn fixtures(channel: &Channel) -> Fixtures {
    use loopd_proto::{NetServiceClient, ProcessServiceClient};
    let mut net = NetServiceClient::new(channel.clone());
    let (server_id, port) = tcp_server(channel, pb::ServerProtocol::Unspecified, 0).await;
    let transport_id = net
        .open_connection(pb::OpenConnectionRequest {
            host: "127.0.0.1".into(),
            port: port.into(),
            ..Default::default()
        })
        .await
        .expect("OpenConnection")
        .into_inner()
        .transport
        .expect("transport")
        .transport_id;
    let endpoint_id = net
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest {
            local_host: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("CreateDatagramEndpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
        .endpoint_id;
    let mut process = ProcessServiceClient::new(channel.clone());
    let spec = pb::ProcessSpec {
        argv: vec![b"cat".to_vec()],
        stdin: pb::Stdio::Pipe as i32,
        ..Default::default()
    };
    let process_id = process
        .spawn(pb::SpawnRequest {
            r#loop: String::new(),
            spec: Some(spec),
        })
        .await
        .expect("Spawn cat")
        .into_inner()
        .process
        .expect("process")
        .process_id;
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().expect("utf-8").as_bytes()).expect("path");
    // SAFETY: a valid C string; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let fifo_id = process
        .open_fifo(pb::OpenFifoRequest {
            path: fifo.to_str().expect("utf-8").as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .expect("OpenFifo")
        .into_inner()
        .fifo_id;
    let file = dir.path().join("plain");
    std::fs::write(&file, b"plain").expect("write file");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let mut loops = LoopServiceClient::new(channel.clone());
    loops
        .create_loop(pb::CreateLoopRequest {
            r#loop: CLOSED.into(),
            ..Default::default()
        })
        .await
        .expect("CreateLoop");
    support::stop_and_close(&mut loops, CLOSED).await;
    Fixtures {
        server_id,
        transport_id,
        endpoint_id,
        process_id,
        fifo_id,
        file: file.to_str().expect("utf-8").to_owned(),
        cert_pem: certified.cert.pem().into_bytes(),
        key_pem: certified.signing_key.serialize_pem().into_bytes(),
        _dir: dir,
    }
}

/// A request naming loop `name`, valid otherwise: encoded, for the loop-name sweep.
type AtLoop = Box<dyn Fn(&str) -> Vec<u8>>;

fn at<M: Message + 'static>(make: impl Fn(String) -> M + 'static) -> AtLoop {
    Box::new(move |name| make(name.to_owned()).encode_to_vec())
}

/// Every RPC that names a loop, with an otherwise valid request.
#[rustfmt::skip]
fn loop_requests(fx: &Fixtures) -> Vec<(&'static str, AtLoop)> {
    use pb::read_transport_request::Kind as Read;
    use pb::schedule_entry::When as W;
    let (server, transport, endpoint) = (fx.server_id, fx.transport_id, fx.endpoint_id);
    let (process, fifo) = (fx.process_id, fx.fifo_id);
    let (cert, key) = (fx.cert_pem.clone(), fx.key_pem.clone());
    let soon = || vec![pb::ScheduleEntry { when: Some(W::Soon(())), ..Default::default() }];
    let tls = move || Some(pb::start_tls_request::Side::Server(pb::TlsServerOptions {
        cert_pem: cert.clone(), key_pem: key.clone(), ..Default::default()
    }));
    let now = || Some(std::time::SystemTime::now().into());
    vec![
        ("LoopService/GetLoop", at(|r#loop| pb::GetLoopRequest { r#loop })),
        ("LoopService/StartLoop", at(|r#loop| pb::StartLoopRequest { r#loop })),
        ("LoopService/StopLoop", at(|r#loop| pb::StopLoopRequest { r#loop })),
        ("LoopService/CloseLoop", at(|r#loop| pb::CloseLoopRequest { r#loop })),
        ("LoopService/SetDebug", at(|r#loop| pb::SetDebugRequest { r#loop, ..Default::default() })),
        ("LoopService/GetTime", at(|r#loop| pb::GetTimeRequest { r#loop })),
        ("DaemonService/GetMetrics", at(|name| pb::GetMetricsRequest { loops: vec![name] })),
        ("EventService/Subscribe", at(|r#loop| pb::SubscribeRequest { r#loop, ..Default::default() })),
        ("SchedulerService/CallSoon", at(|r#loop| pb::CallSoonRequest { r#loop, ..Default::default() })),
        ("SchedulerService/CallLater", at(|r#loop| later(&r#loop, Some(After::DelaySeconds(1.0))))),
        ("SchedulerService/CallAt", at(|r#loop| pb::CallAtRequest { r#loop, ..Default::default() })),
        ("SchedulerService/CallAtWallTime", at(move |r#loop| pb::CallAtWallTimeRequest { r#loop, when: now(), ..Default::default() })),
        ("SchedulerService/ScheduleBatch", at(move |r#loop| pb::ScheduleBatchRequest { r#loop, entries: soon() })),
        ("SchedulerService/Schedule", at(move |r#loop| pb::ScheduleBatchRequest { r#loop, entries: soon() })),
        ("SchedulerService/CancelHandle", at(|r#loop| pb::CancelHandleRequest { r#loop, handle_id: 1 })),
        ("SchedulerService/GetHandle", at(|r#loop| pb::GetHandleRequest { r#loop, handle_id: 1 })),
        ("SchedulerService/ListHandles", at(|r#loop| pb::ListHandlesRequest { r#loop, ..Default::default() })),
        ("FutureService/CreateFuture", at(|r#loop| pb::CreateFutureRequest { r#loop, ..Default::default() })),
        ("FutureService/SetResult", at(|r#loop| pb::SetResultRequest { r#loop, future_id: 1, ..Default::default() })),
        ("FutureService/SetException", at(|r#loop| pb::SetExceptionRequest { r#loop, future_id: 1, ..Default::default() })),
        ("FutureService/CancelFuture", at(|r#loop| pb::CancelFutureRequest { r#loop, future_id: 1, ..Default::default() })),
        ("FutureService/GetFuture", at(|r#loop| pb::GetFutureRequest { r#loop, future_id: 1 })),
        ("FutureService/WaitFuture", at(|r#loop| pb::WaitFutureRequest { r#loop, future_id: 1, ..Default::default() })),
        ("NetService/CreateServer", at(|r#loop| pb::CreateServerRequest { r#loop, hosts: vec!["127.0.0.1".into()], ..Default::default() })),
        ("NetService/ListServers", at(|r#loop| pb::ListServersRequest { r#loop, ..Default::default() })),
        ("NetService/GetServer", at(move |r#loop| pb::GetServerRequest { r#loop, server_id: server })),
        ("NetService/CloseServer", at(move |r#loop| pb::CloseServerRequest { r#loop, server_id: server })),
        ("NetService/StartServing", at(move |r#loop| pb::StartServingRequest { r#loop, server_id: server })),
        ("NetService/OpenConnection", at(|r#loop| pb::OpenConnectionRequest { r#loop, host: "127.0.0.1".into(), port: 9, ..Default::default() })),
        ("NetService/ListTransports", at(|r#loop| pb::ListTransportsRequest { r#loop, ..Default::default() })),
        ("NetService/GetTransport", at(move |r#loop| pb::GetTransportRequest { r#loop, transport_id: transport })),
        ("NetService/Write", at(move |r#loop| pb::WriteRequest { r#loop, transport_id: transport, data: b"x".to_vec() })),
        ("NetService/WriteEof", at(move |r#loop| pb::WriteEofRequest { r#loop, transport_id: transport })),
        ("NetService/CloseTransport", at(move |r#loop| pb::CloseTransportRequest { r#loop, transport_id: transport })),
        ("NetService/AbortTransport", at(move |r#loop| pb::AbortTransportRequest { r#loop, transport_id: transport })),
        ("NetService/PauseReading", at(move |r#loop| pb::PauseReadingRequest { r#loop, transport_id: transport })),
        ("NetService/ResumeReading", at(move |r#loop| pb::ResumeReadingRequest { r#loop, transport_id: transport })),
        ("NetService/SetWriteBufferLimits", at(move |r#loop| pb::SetWriteBufferLimitsRequest { r#loop, transport_id: transport, ..Default::default() })),
        ("NetService/ReadTransport", at(move |r#loop| pb::ReadTransportRequest {
            kind: Some(Read::Open(pb::ReadTransportOpen { r#loop, transport_id: transport, ..Default::default() })),
        })),
        ("NetService/CreateDatagramEndpoint", at(|r#loop| pb::CreateDatagramEndpointRequest { r#loop, local_host: "127.0.0.1".into(), ..Default::default() })),
        ("NetService/SendDatagram", at(move |r#loop| pb::SendDatagramRequest {
            r#loop, endpoint_id: endpoint, data: b"x".to_vec(), host: "127.0.0.1".into(), port: 9, ..Default::default()
        })),
        ("NetService/CloseDatagramEndpoint", at(move |r#loop| pb::CloseDatagramEndpointRequest { r#loop, endpoint_id: endpoint })),
        ("NetService/GetDatagramEndpoint", at(move |r#loop| pb::GetDatagramEndpointRequest { r#loop, endpoint_id: endpoint })),
        ("NetService/ListDatagramEndpoints", at(|r#loop| pb::ListDatagramEndpointsRequest { r#loop, ..Default::default() })),
        ("NetService/Resolve", at(|r#loop| pb::ResolveRequest { r#loop, host: "localhost".into(), ..Default::default() })),
        ("NetService/ReverseResolve", at(|r#loop| pb::ReverseResolveRequest { r#loop, ip: "127.0.0.1".into(), ..Default::default() })),
        ("NetService/Sendfile", at(move |r#loop| pb::SendfileRequest { r#loop, transport_id: transport, path: "/etc/hostname".into(), ..Default::default() })),
        ("NetService/StartTls", at(move |r#loop| pb::StartTlsRequest { r#loop, transport_id: transport, side: tls(), ..Default::default() })),
        ("ProcessService/Spawn", at(|r#loop| pb::SpawnRequest { r#loop, spec: Some(argv(&[b"true"])) })),
        ("ProcessService/WriteStdin", at(move |r#loop| pb::WriteStdinRequest { r#loop, process_id: process, ..Default::default() })),
        ("ProcessService/CloseStdin", at(move |r#loop| pb::CloseStdinRequest { r#loop, process_id: process })),
        ("ProcessService/SendSignal", at(move |r#loop| pb::SendSignalRequest { r#loop, process_id: process, signal: "CONT".into(), ..Default::default() })),
        ("ProcessService/Terminate", at(move |r#loop| pb::TerminateRequest { r#loop, process_id: process })),
        ("ProcessService/Kill", at(move |r#loop| pb::KillRequest { r#loop, process_id: process })),
        ("ProcessService/Wait", at(move |r#loop| pb::WaitRequest { r#loop, process_id: process, ..Default::default() })),
        ("ProcessService/GetProcess", at(move |r#loop| pb::GetProcessRequest { r#loop, process_id: process })),
        ("ProcessService/ListProcesses", at(|r#loop| pb::ListProcessesRequest { r#loop, ..Default::default() })),
        ("ProcessService/ReadOutput", at(move |r#loop| pb::ReadOutputRequest { r#loop, process_id: process, fd: 1, ..Default::default() })),
        ("ProcessService/OpenFifo", at(|r#loop| pb::OpenFifoRequest { r#loop, path: b"/nonexistent-fifo".to_vec(), ..Default::default() })),
        ("ProcessService/ReadFifo", at(move |r#loop| pb::ReadFifoRequest { r#loop, fifo_id: fifo, ..Default::default() })),
        ("ProcessService/WriteFifo", at(move |r#loop| pb::WriteFifoRequest { r#loop, fifo_id: fifo, ..Default::default() })),
        ("ProcessService/CloseFifo", at(move |r#loop| pb::CloseFifoRequest { r#loop, fifo_id: fifo })),
        ("SignalService/AddSignalHandler", at(|r#loop| pb::AddSignalHandlerRequest { r#loop, signal: "USR2".into(), ..Default::default() })),
        ("SignalService/RemoveSignalHandler", at(|r#loop| pb::RemoveSignalHandlerRequest { r#loop, signal: "USR2".into() })),
        ("SignalService/ListSignalHandlers", at(|r#loop| pb::ListSignalHandlersRequest { r#loop })),
    ]
}

/// Loop names that name no loop, with the piece of the message that must name them.
fn missing_loop_names() -> Vec<(String, &'static str)> {
    vec![
        ("nowhere".into(), "nowhere"),
        ("a\0b".into(), "a\\0b"),
        ("x".repeat(10_000), "xxxxxxxxxx"),
        ("é/../\"".into(), "é/../\\\""),
        ("\0".repeat(10_000), "\\0\\0\\0"),
        ("é".repeat(10_000), "ééééé"),
    ]
}

/// RPCs that answer for a closed loop: its last snapshot, its clock, the end of its events.
const ANSWER_WHEN_CLOSED: [&str; 5] = [
    "LoopService/GetLoop",
    "LoopService/CloseLoop",
    "LoopService/GetTime",
    "DaemonService/GetMetrics",
    "EventService/Subscribe",
];

/// The closed-loop sweep: every other RPC is FAILED_PRECONDITION naming the loop.
fn closed_loop_cases(fx: &Fixtures) -> Vec<Case> {
    loop_requests(fx)
        .into_iter()
        .filter(|(rpc, _)| !ANSWER_WHEN_CLOSED.contains(rpc))
        .map(|(rpc, make)| Case {
            rpc,
            messages: vec![make(CLOSED)],
            shown: format!("closed loop {CLOSED:?}"),
            code: Code::FailedPrecondition,
            needle: format!("loop {CLOSED:?} is closed"),
        })
        .collect()
}

/// The loop-name sweep: an unknown loop is NOT_FOUND naming it, for every RPC.
fn loop_cases(fx: &Fixtures) -> Vec<Case> {
    let mut cases = Vec::new();
    for (rpc, make) in loop_requests(fx) {
        for (name, needle) in missing_loop_names() {
            cases.push(Case {
                rpc,
                messages: vec![make(&name)],
                shown: format!("loop {}", short(format!("{name:?}"))),
                code: Code::NotFound,
                needle: needle.into(),
            });
        }
    }
    cases
}

fn dur(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn soon(kind: pb::action::Kind) -> pb::CallSoonRequest {
    pb::CallSoonRequest {
        action: Some(pb::Action { kind: Some(kind) }),
        ..Default::default()
    }
}

fn argv(words: &[&[u8]]) -> pb::ProcessSpec {
    pb::ProcessSpec {
        argv: words.iter().map(|w| w.to_vec()).collect(),
        ..Default::default()
    }
}

fn spawn(spec: pb::ProcessSpec) -> pb::SpawnRequest {
    pb::SpawnRequest {
        r#loop: String::new(),
        spec: Some(spec),
    }
}

fn env(name: &[u8], value: &[u8]) -> pb::ProcessSpec {
    let var = pb::EnvVar {
        name: name.to_vec(),
        value: value.to_vec(),
    };
    pb::ProcessSpec {
        env: vec![var],
        ..argv(&[b"true"])
    }
}

/// A case of raw request messages.
fn raw_case(rpc: &'static str, messages: Vec<Vec<u8>>, code: Code, needle: &str) -> Case {
    let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
    Case {
        rpc,
        messages,
        shown: format!("raw messages of {sizes:?} bytes"),
        code,
        needle: needle.into(),
    }
}

/// A message over the sweep's limit: an unknown field 1000 (length-delimited) of junk.
fn oversized() -> Vec<u8> {
    let mut bytes = vec![0xc2, 0x3e];
    prost::encoding::encode_varint(SWEEP_MESSAGE_LIMIT as u64 + 10, &mut bytes);
    bytes.resize(bytes.len() + SWEEP_MESSAGE_LIMIT + 10, b'z');
    bytes
}

/// Bad times, durations and deadlines.
#[rustfmt::skip]
fn time_cases() -> Vec<Case> {
    use pb::schedule_entry::When as W;
    const LATER: &str = "SchedulerService/CallLater";
    const AT: &str = "SchedulerService/CallAt";
    const WALL: &str = "SchedulerService/CallAtWallTime";
    const BATCH: &str = "SchedulerService/ScheduleBatch";
    let bad = Code::InvalidArgument;
    let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
    let delay = |d| later("", Some(After::Delay(d)));
    let secs = |s| later("", Some(After::DelaySeconds(s)));
    let call_at = |when| pb::CallAtRequest { when, ..Default::default() };
    let wall = |seconds, nanos| pb::CallAtWallTimeRequest { when: Some(prost_types::Timestamp { seconds, nanos }), ..Default::default() };
    let entry = |when| pb::ScheduleBatchRequest { r#loop: String::new(), entries: vec![pb::ScheduleEntry { when: Some(when), ..Default::default() }] };
    let wait_future = |timeout| pb::WaitFutureRequest { future_id: 1, timeout, ..Default::default() };
    let wait = |timeout| pb::WaitRequest { process_id: 1, timeout, ..Default::default() };
    let debug = |slow| pb::SetDebugRequest { slow_callback_duration: slow, ..Default::default() };
    let connect = |timeout, happy_eyeballs_delay| pb::OpenConnectionRequest {
        host: "127.0.0.1".into(), port: 9, timeout, happy_eyeballs_delay, ..Default::default()
    };
    let create = pb::CreateLoopRequest { r#loop: "slowcb".into(), slow_callback_duration: dur(-1, 0), ..Default::default() };
    vec![
        case(LATER, later("", None), bad, "delay"),
        case(LATER, secs(f64::NAN), bad, "delay_seconds: NaN"),
        case(LATER, secs(f64::NEG_INFINITY), bad, "delay_seconds: -inf"),
        case(LATER, secs(1e300), bad, "1e300"),
        case(LATER, secs(-1e300), bad, "-1e300"),
        case(LATER, secs(f64::MAX), bad, "delay_seconds"),
        case(LATER, delay(d(1, -5)), bad, "nanos: -5"),
        case(LATER, delay(d(0, 1_000_000_000)), bad, "1000000000"),
        case(LATER, delay(d(i64::MAX, 999_999_999)), bad, "out of range"),
        case(LATER, delay(d(i64::MIN, -999_999_999)), bad, "out of range"),
        case(AT, call_at(f64::NAN), bad, "when: NaN"),
        case(AT, call_at(f64::NEG_INFINITY), bad, "when: -inf"),
        case(AT, call_at(1e300), bad, "when: 1e300"),
        case(AT, call_at(-1e300), bad, "when: -1e300"),
        case(WALL, pb::CallAtWallTimeRequest::default(), bad, "when"),
        case(WALL, wall(0, -1), bad, "when: Timestamp { seconds: 0, nanos: -1 }"),
        case(WALL, wall(0, 1_000_000_000), bad, "nanos: 1000000000"),
        case(WALL, wall(i64::MAX, 0), bad, "when: Timestamp"),
        case(WALL, wall(i64::MIN, 0), bad, "when: Timestamp"),
        case(WALL, wall(253_402_300_800, 0), bad, "seconds: 253402300800"),
        case(BATCH, entry(W::DelaySeconds(f64::NAN)), bad, "entry 0"),
        case(BATCH, entry(W::At(f64::NEG_INFINITY)), bad, "at: -inf"),
        case(BATCH, entry(W::Delay(d(1, -1))), bad, "nanos: -1"),
        case(BATCH, entry(W::AtWallTime(prost_types::Timestamp { seconds: 0, nanos: -1 })), bad, "at_wall_time"),
        case("FutureService/WaitFuture", wait_future(dur(-1, 0)), bad, "timeout"),
        case("FutureService/WaitFuture", wait_future(dur(i64::MAX, 0)), bad, "timeout"),
        case("ProcessService/Wait", wait(dur(-5, 0)), bad, "timeout"),
        case("ProcessService/Wait", wait(dur(0, -7)), bad, "timeout"),
        case("LoopService/CreateLoop", create, bad, "slow_callback_duration"),
        case("LoopService/SetDebug", debug(dur(i64::MIN, 0)), bad, "slow_callback_duration"),
        case("LoopService/SetDebug", debug(dur(1, -1)), bad, "slow_callback_duration"),
        case("NetService/OpenConnection", connect(dur(-1, 0), None), bad, "timeout"),
        case("NetService/OpenConnection", connect(None, dur(i64::MAX, 0)), bad, "happy_eyeballs_delay"),
    ]
}

/// Ids that name nothing: 0, one never handed out, u64::MAX.
const NO_IDS: [u64; 3] = [0, 987_654_321, u64::MAX];

/// Unknown ids of every kind are NOT_FOUND naming the id.
#[rustfmt::skip]
fn id_cases() -> Vec<Case> {
    use pb::action::Kind as K;
    let mut cases = Vec::new();
    let nf = Code::NotFound;
    for id in NO_IDS {
        let n = &id.to_string();
        let client = Some(pb::start_tls_request::Side::Client(pb::TlsClientOptions { server_name: "localhost".into(), ..Default::default() }));
        let open = Some(pb::read_transport_request::Kind::Open(pb::ReadTransportOpen { transport_id: id, credit: 1024, ..Default::default() }));
        cases.extend([
            case("SchedulerService/CancelHandle", pb::CancelHandleRequest { r#loop: String::new(), handle_id: id }, nf, n),
            case("SchedulerService/GetHandle", pb::GetHandleRequest { r#loop: String::new(), handle_id: id }, nf, n),
            case("FutureService/SetResult", pb::SetResultRequest { future_id: id, ..Default::default() }, nf, n),
            case("FutureService/SetException", pb::SetExceptionRequest { future_id: id, ..Default::default() }, nf, n),
            case("FutureService/CancelFuture", pb::CancelFutureRequest { future_id: id, ..Default::default() }, nf, n),
            case("FutureService/GetFuture", pb::GetFutureRequest { future_id: id, ..Default::default() }, nf, n),
            case("FutureService/WaitFuture", pb::WaitFutureRequest { future_id: id, ..Default::default() }, nf, n),
            case("NetService/GetServer", pb::GetServerRequest { server_id: id, ..Default::default() }, nf, n),
            case("NetService/CloseServer", pb::CloseServerRequest { server_id: id, ..Default::default() }, nf, n),
            case("NetService/StartServing", pb::StartServingRequest { server_id: id, ..Default::default() }, nf, n),
            case("NetService/GetTransport", pb::GetTransportRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/Write", pb::WriteRequest { transport_id: id, data: b"x".to_vec(), ..Default::default() }, nf, n),
            case("NetService/WriteEof", pb::WriteEofRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/CloseTransport", pb::CloseTransportRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/AbortTransport", pb::AbortTransportRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/PauseReading", pb::PauseReadingRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/ResumeReading", pb::ResumeReadingRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/SetWriteBufferLimits", pb::SetWriteBufferLimitsRequest { transport_id: id, ..Default::default() }, nf, n),
            case("NetService/ReadTransport", pb::ReadTransportRequest { kind: open }, nf, n),
            case("NetService/SendDatagram", pb::SendDatagramRequest { endpoint_id: id, data: b"x".to_vec(), ..Default::default() }, nf, n),
            case("NetService/CloseDatagramEndpoint", pb::CloseDatagramEndpointRequest { endpoint_id: id, ..Default::default() }, nf, n),
            case("NetService/GetDatagramEndpoint", pb::GetDatagramEndpointRequest { endpoint_id: id, ..Default::default() }, nf, n),
            case("NetService/Sendfile", pb::SendfileRequest { transport_id: id, path: "/etc/hostname".into(), ..Default::default() }, nf, n),
            case("NetService/StartTls", pb::StartTlsRequest { transport_id: id, side: client, ..Default::default() }, nf, n),
            case("ProcessService/WriteStdin", pb::WriteStdinRequest { process_id: id, ..Default::default() }, nf, n),
            case("ProcessService/CloseStdin", pb::CloseStdinRequest { process_id: id, ..Default::default() }, nf, n),
            case("ProcessService/SendSignal", pb::SendSignalRequest { process_id: id, signal: "TERM".into(), ..Default::default() }, nf, n),
            case("ProcessService/Terminate", pb::TerminateRequest { process_id: id, ..Default::default() }, nf, n),
            case("ProcessService/Kill", pb::KillRequest { process_id: id, ..Default::default() }, nf, n),
            case("ProcessService/Wait", pb::WaitRequest { process_id: id, ..Default::default() }, nf, n),
            case("ProcessService/GetProcess", pb::GetProcessRequest { process_id: id, ..Default::default() }, nf, n),
            case("ProcessService/ReadOutput", pb::ReadOutputRequest { process_id: id, fd: 1, credit_bytes: 1024, ..Default::default() }, nf, n),
            case("ProcessService/ReadFifo", pb::ReadFifoRequest { fifo_id: id, credit_bytes: 1024, ..Default::default() }, nf, n),
            case("ProcessService/WriteFifo", pb::WriteFifoRequest { fifo_id: id, ..Default::default() }, nf, n),
            case("ProcessService/CloseFifo", pb::CloseFifoRequest { fifo_id: id, ..Default::default() }, nf, n),
        ]);
        if id != 0 {
            // Actions aimed at unknown resources (0 is INVALID_ARGUMENT: see action_cases).
            let signal = pb::SignalProcessAction { process_id: id, signal: "TERM".into(), to_group: false };
            cases.extend([
                case(SOON, soon(K::ResolveFuture(pb::ResolveFutureAction { future_id: id, value: vec![] })), nf, n),
                case(SOON, soon(K::WriteTransport(pb::WriteTransportAction { transport_id: id, data: vec![1] })), nf, n),
                case(SOON, soon(K::CloseTransport(pb::CloseTransportAction { transport_id: id, abort: true })), nf, n),
                case(SOON, soon(K::SignalProcess(signal)), nf, n),
            ]);
        }
    }
    cases
}

const SOON: &str = "SchedulerService/CallSoon";

/// Actions: zero ids, bad signals and specs, long tags, big payloads; long keys and
/// messages.
#[rustfmt::skip]
fn action_cases() -> Vec<Case> {
    use pb::action::Kind as K;
    let (bad, full) = (Code::InvalidArgument, Code::ResourceExhausted);
    let big = vec![0u8; 65_537];
    let signal = |signal: &str| K::SignalProcess(pb::SignalProcessAction { process_id: 1, signal: signal.into(), to_group: false });
    let emit = |tag: String, payload| K::EmitEvent(pb::EmitEventAction { tag, payload });
    let zero_future = pb::Action { kind: Some(K::ResolveFuture(pb::ResolveFutureAction { future_id: 0, value: vec![] })) };
    let handler = pb::AddSignalHandlerRequest { signal: "USR2".into(), action: Some(zero_future), ..Default::default() };
    vec![
        case(SOON, soon(K::ResolveFuture(pb::ResolveFutureAction { future_id: 0, value: vec![] })), bad, "future_id"),
        case(SOON, soon(K::WriteTransport(pb::WriteTransportAction { transport_id: 0, data: vec![] })), bad, "transport_id"),
        case(SOON, soon(K::CloseTransport(pb::CloseTransportAction { transport_id: 0, abort: false })), bad, "transport_id"),
        case(SOON, soon(signal("SIGNOPE")), bad, "SIGNOPE"),
        case(SOON, soon(signal("")), bad, "signal"),
        case(SOON, soon(K::SpawnProcess(pb::SpawnProcessAction { spec: None })), bad, "spec"),
        case(SOON, soon(K::SpawnProcess(pb::SpawnProcessAction { spec: Some(argv(&[])) })), bad, "argv"),
        case(SOON, soon(emit("t".repeat(257), vec![])), bad, "257"),
        case(SOON, soon(emit(String::new(), big.clone())), full, "65537"),
        case(SOON, soon(K::ResolveFuture(pb::ResolveFutureAction { future_id: 1, value: big.clone() })), full, "65537"),
        case(SOON, soon(K::WriteTransport(pb::WriteTransportAction { transport_id: 1, data: big.clone() })), full, "65537"),
        case(SOON, pb::CallSoonRequest { request_id: "k".repeat(129), ..Default::default() }, bad, "request_id"),
        case("FutureService/CreateFuture", pb::CreateFutureRequest { request_id: "k".repeat(129), ..Default::default() }, bad, "request_id"),
        case("FutureService/SetResult", pb::SetResultRequest { future_id: 1, result: big, ..Default::default() }, full, "65537"),
        case("FutureService/SetException", pb::SetExceptionRequest { future_id: 1, message: "m".repeat(4097), ..Default::default() }, bad, "4097"),
        case("FutureService/CancelFuture", pb::CancelFutureRequest { future_id: 1, message: "m".repeat(4097), ..Default::default() }, bad, "4097"),
        case("SignalService/AddSignalHandler", handler, bad, "future_id"),
    ]
}

/// Batches: unset entries, too many entries, repeated keys; page tokens and filters.
#[rustfmt::skip]
fn batch_cases() -> Vec<Case> {
    use pb::schedule_entry::When as W;
    const LIST: &str = "SchedulerService/ListHandles";
    let bad = Code::InvalidArgument;
    let entry = |key: &str| pb::ScheduleEntry { when: Some(W::Soon(())), action: None, request_id: key.into() };
    let batch = |entries| pb::ScheduleBatchRequest { r#loop: String::new(), entries };
    let token = |token: &str| pb::ListHandlesRequest { page_token: token.into(), ..Default::default() };
    let filter = |states, kind| pb::ListHandlesRequest { states, kind, ..Default::default() };
    vec![
        case("SchedulerService/ScheduleBatch", batch(vec![pb::ScheduleEntry::default()]), bad, "entry 0"),
        case("SchedulerService/ScheduleBatch", batch(vec![entry(""); 10_001]), bad, "10001"),
        case("SchedulerService/ScheduleBatch", batch(vec![entry("a"), entry("a")]), bad, "entry 1"),
        case_stream("SchedulerService/Schedule", vec![batch(vec![entry(""), pb::ScheduleEntry::default()])], bad, "entry 1"),
        case_stream("SchedulerService/Schedule", vec![batch(vec![entry(""); 10_001])], bad, "10001"),
        case(LIST, token("garbage"), bad, "garbage"),
        case(LIST, token("1.ffffffffffffffff"), bad, "page_token"),
        case(LIST, token("\0"), bad, "page_token"),
        case(LIST, token(&"t".repeat(10_000)), bad, "page_token"),
        case(LIST, filter(vec![], 99), bad, "kind: 99"),
        case(LIST, filter(vec![0], 0), bad, "states: 0"),
        case(LIST, filter(vec![1, -3], 0), bad, "states: -3"),
    ]
}

/// Addresses, ports, enums, paths, windows and TLS material of NetService.
#[rustfmt::skip]
fn net_cases(fx: &Fixtures) -> Vec<Case> {
    use pb::read_transport_request::Kind as Read;
    use pb::start_tls_request::Side;
    const CS: &str = "NetService/CreateServer";
    const OC: &str = "NetService/OpenConnection";
    const CD: &str = "NetService/CreateDatagramEndpoint";
    const SD: &str = "NetService/SendDatagram";
    const RT: &str = "NetService/ReadTransport";
    const ST: &str = "NetService/StartTls";
    const SF: &str = "NetService/Sendfile";
    let bad = Code::InvalidArgument;
    let t = fx.transport_id;
    let server = |f: fn(&mut pb::CreateServerRequest)| {
        let mut req = pb::CreateServerRequest { hosts: vec!["127.0.0.1".into()], ..Default::default() };
        f(&mut req);
        req
    };
    let connect = |f: fn(&mut pb::OpenConnectionRequest)| {
        let mut req = pb::OpenConnectionRequest { host: "127.0.0.1".into(), port: 9, ..Default::default() };
        f(&mut req);
        req
    };
    let dgram = |f: fn(&mut pb::CreateDatagramEndpointRequest)| {
        let mut req = pb::CreateDatagramEndpointRequest::default();
        f(&mut req);
        req
    };
    let send = |f: fn(&mut pb::SendDatagramRequest)| {
        let mut req = pb::SendDatagramRequest { data: b"x".to_vec(), ..Default::default() };
        f(&mut req);
        req
    };
    let tls_server = |cert_pem: &[u8], key_pem: &[u8]| pb::TlsServerOptions { cert_pem: cert_pem.into(), key_pem: key_pem.into(), ..Default::default() };
    let tls_client = |ca_pem: &[u8], ca_path: &str| pb::TlsClientOptions { ca_pem: ca_pem.into(), ca_path: ca_path.into(), ..Default::default() };
    let named = |ca_pem: &[u8], name: &str| pb::TlsClientOptions { server_name: name.into(), ..tls_client(ca_pem, "") };
    let open = |transport_id, from_offset| pb::ReadTransportRequest {
        kind: Some(Read::Open(pb::ReadTransportOpen { transport_id, from_offset, credit: 1024, ..Default::default() })),
    };
    let credit = pb::ReadTransportRequest { kind: Some(Read::Credit(pb::StreamCredit { bytes: 1 })) };
    let marks = |high, low| pb::SetWriteBufferLimitsRequest { transport_id: t, high, low, ..Default::default() };
    let sendfile = |path: &str| pb::SendfileRequest { transport_id: t, path: path.into(), ..Default::default() };
    let start_tls = |side| pb::StartTlsRequest { transport_id: t, side, ..Default::default() };
    let resolve = |host: &str, port, family| pb::ResolveRequest { host: host.into(), port, family, ..Default::default() };
    let reverse = |ip: &str, port| pb::ReverseResolveRequest { ip: ip.into(), port, ..Default::default() };
    let server_tls = server(|r| r.tls = Some(pb::TlsServerOptions { cert_path: "/etc/a\0b".into(), key_path: "/etc/k".into(), ..Default::default() }));
    let mut server_junk = server(|_| {});
    server_junk.tls = Some(tls_server(b"junk", b"junk"));
    let mut server_timeout = server(|_| {});
    server_timeout.tls = Some(pb::TlsServerOptions { handshake_timeout: dur(-1, 0), ..tls_server(&fx.cert_pem, &fx.key_pem) });
    let mut connect_ca = connect(|_| {});
    connect_ca.tls = Some(tls_client(b"junk", ""));
    let mut connect_ca_path = connect(|_| {});
    connect_ca_path.tls = Some(tls_client(b"", "/no\0where"));
    let opened = open(t, None).encode_to_vec();
    let endpoints = |token: &str| pb::ListDatagramEndpointsRequest { page_token: token.into(), ..Default::default() };
    vec![
        case("NetService/ListDatagramEndpoints", endpoints("garbage"), bad, "garbage"),
        case("NetService/ListDatagramEndpoints", endpoints("1.ffffffffffffffff"), bad, "page_token"),
        case(CS, server(|r| r.port = 65_536), bad, "65536"),
        case(CS, server(|r| r.port = u32::MAX), bad, "4294967295"),
        case(CS, server(|r| r.hosts = vec!["not a host!".into()]), bad, "not a host!"),
        case(CS, server(|r| r.hosts = vec!["a\0b".into()]), bad, "a\\0b"),
        case(CS, server(|r| r.hosts = vec![String::new()]), bad, "host"),
        case(CS, server(|r| r.hosts = vec!["h".repeat(10_000)]), bad, "hhhhhhhh"),
        case(CS, server(|r| { r.hosts.clear(); r.unix_path = "/tmp/a\0b".into() }), bad, "unix_path"),
        case(CS, server(|r| { r.hosts.clear(); r.unix_path = "/tmp/".to_owned() + &"p".repeat(10_000) }), bad, "unix_path"),
        case(CS, server(|r| r.unix_path = "/tmp/x.sock".into()), bad, "/tmp/x.sock"),
        case(CS, server(|r| r.protocol = 99), bad, "protocol"),
        case(CS, server(|r| r.protocol = -1), bad, "protocol"),
        case(CS, server(|r| r.delivery = 99), bad, "delivery"),
        case(CS, server(|r| r.stream_window_bytes = u64::MAX), bad, "stream_window_bytes"),
        case(CS, server(|r| r.tls = Some(pb::TlsServerOptions::default())), bad, "tls"),
        case(CS, server_junk, bad, "certificate"),
        case(CS, server_tls, bad, "/etc/a\0b"),
        case(CS, server_timeout, bad, "tls.handshake_timeout"),
        case(OC, connect(|r| r.port = 0), bad, "port"),
        case(OC, connect(|r| r.port = 65_536), bad, "65536"),
        case(OC, connect(|r| r.host = String::new()), bad, "host"),
        case(OC, connect(|r| r.host = "a\0b".into()), bad, "a\\0b"),
        case(OC, connect(|r| r.host = "x".repeat(10_000)), bad, "xxxxxxxx"),
        case(OC, connect(|r| r.unix_path = "/tmp/x.sock".into()), bad, "/tmp/x.sock"),
        case(OC, connect(|r| { r.host.clear(); r.port = 0; r.unix_path = "/tmp/\0".into() }), bad, "unix_path"),
        case(OC, connect(|r| r.local_host = "nope".into()), bad, "nope"),
        case(OC, connect(|r| { r.local_host = "127.0.0.1".into(); r.local_port = 70_000 }), bad, "70000"),
        case(OC, connect(|r| r.delivery = 7), bad, "delivery"),
        case(OC, connect(|r| r.stream_window_bytes = u64::MAX), bad, "stream_window_bytes"),
        case(OC, connect_ca, bad, "ca"),
        case(OC, connect_ca_path, bad, "/no\0where"),
        case(CD, dgram(|_| {}), bad, "local_host"),
        case(CD, dgram(|r| { r.local_host = "127.0.0.1".into(); r.local_port = 65_536 }), bad, "65536"),
        case(CD, dgram(|r| r.remote_host = "bad host".into()), bad, "bad host"),
        case(CD, dgram(|r| r.local_path = "/tmp/\0x".into()), bad, "local_path"),
        case(CD, dgram(|r| { r.local_path = "/tmp/d.sock".into(); r.local_port = 5 }), bad, "local_path"),
        case(SD, send(|r| { r.host = "127.0.0.1".into(); r.port = 0 }), bad, "port"),
        case(SD, send(|r| { r.host = "127.0.0.1".into(); r.port = 65_536 }), bad, "65536"),
        case(SD, send(|r| { r.host = "nope".into(); r.port = 9 }), bad, "nope"),
        case(SD, send(|r| r.path = "/tmp/\0".into()), bad, "path"),
        case(SD, send(|r| { r.path = "/tmp/p".into(); r.host = "::1".into() }), bad, "path"),
        case("NetService/Resolve", resolve("", 0, 0), bad, "host"),
        case("NetService/Resolve", resolve("a\0b", 0, 0), bad, "a\\0b"),
        case("NetService/Resolve", resolve("localhost", 65_536, 0), bad, "65536"),
        case("NetService/Resolve", resolve("localhost", 0, 9), bad, "family"),
        case("NetService/ReverseResolve", reverse("", 0), bad, "ip"),
        case("NetService/ReverseResolve", reverse("localhost", 0), bad, "localhost"),
        case("NetService/ReverseResolve", reverse("::1", 65_536), bad, "65536"),
        case(SF, sendfile(""), bad, "path"),
        case(SF, sendfile("/etc/\0"), bad, "/etc/\\0"),
        case(SF, sendfile("/nonexistent/file"), Code::NotFound, "/nonexistent/file"),
        case(SF, sendfile("/tmp"), bad, "\"/tmp\" is a directory"),
        case(SF, sendfile(&format!("/{}", "n".repeat(300))), bad, "nnnnnnnn"),
        case(SF, pb::SendfileRequest { offset: u64::MAX, count: Some(u64::MAX), ..sendfile(&fx.file) }, bad, "offset: 18446744073709551615"),
        case(SF, pb::SendfileRequest { count: Some(0), ..sendfile(&fx.file) }, bad, "count: 0"),
        case("NetService/SetWriteBufferLimits", marks(Some(10), Some(20)), bad, "20"),
        case("NetService/Write", pb::WriteRequest { transport_id: t, data: vec![0; 300_000], ..Default::default() }, Code::ResourceExhausted, "262144"),
        case(ST, start_tls(None), bad, "side"),
        case(ST, start_tls(Some(Side::Client(tls_client(&fx.cert_pem, "")))), bad, "server_name"),
        case(ST, start_tls(Some(Side::Server(tls_server(&fx.cert_pem, b"junk")))), bad, "server.key_pem"),
        // Refused names leave the transport plain: the second request is judged alike.
        case(ST, start_tls(Some(Side::Client(named(&fx.cert_pem, "a\0b")))), bad, "server_hostname: \"a\\0b\""),
        case(ST, start_tls(Some(Side::Client(named(&fx.cert_pem, "bad name!")))), bad, "server_hostname: \"bad name!\""),
        case_stream(RT, Vec::<pb::ReadTransportRequest>::new(), bad, "open"),
        case_stream(RT, vec![credit.clone()], bad, "open"),
        case_stream(RT, vec![pb::ReadTransportRequest { kind: None }], bad, "open"),
        case_stream(RT, vec![open(t, Some(u64::MAX))], Code::OutOfRange, "18446744073709551615"),
        case_stream(RT, vec![open(0, None), credit], Code::NotFound, "0"),
        // Bad messages after a good `open`, once the response has started.
        raw_case(RT, vec![opened.clone(), vec![0xff; 4]], bad, "decode"),
        raw_case(RT, vec![opened, oversized()], Code::ResourceExhausted, "262144"),
    ]
}

/// ProcessService: specs, signals, fds, offsets and FIFOs.
#[rustfmt::skip]
fn process_cases(fx: &Fixtures) -> Vec<Case> {
    const SPAWN: &str = "ProcessService/Spawn";
    const SIG: &str = "ProcessService/SendSignal";
    const RO: &str = "ProcessService/ReadOutput";
    const FIFO: &str = "ProcessService/OpenFifo";
    let bad = Code::InvalidArgument;
    let p = fx.process_id;
    let stdio = |f: fn(&mut pb::ProcessSpec)| {
        let mut spec = argv(&[b"true"]);
        f(&mut spec);
        spawn(spec)
    };
    let read = |fd, from_offset| pb::ReadOutputRequest { process_id: p, fd, from_offset, credit_bytes: 1024, ..Default::default() };
    let sig = |signal: &str| pb::SendSignalRequest { process_id: p, signal: signal.into(), ..Default::default() };
    let open = |path: &[u8]| pb::OpenFifoRequest { path: path.to_vec(), ..Default::default() };
    let read_fifo = pb::ReadFifoRequest { fifo_id: fx.fifo_id, from_offset: u64::MAX, credit_bytes: 1, ..Default::default() };
    let write_fifo = pb::WriteFifoRequest { fifo_id: fx.fifo_id, data: b"x".to_vec(), ..Default::default() };
    let stdin = pb::WriteStdinRequest { process_id: p, data: vec![0; 300_000], ..Default::default() };
    vec![
        case(SPAWN, pb::SpawnRequest::default(), bad, "spec"),
        case(SPAWN, spawn(argv(&[])), bad, "argv"),
        case(SPAWN, spawn(argv(&[b""])), bad, "argv[0]"),
        case(SPAWN, spawn(argv(&[b"echo", b"a\0b"])), bad, "argv[1]"),
        case(SPAWN, spawn(pb::ProcessSpec { shell: b"true".to_vec(), ..argv(&[b"true"]) }), bad, "both argv and shell"),
        case(SPAWN, spawn(pb::ProcessSpec { shell: b"true".to_vec(), ..Default::default() }), Code::FailedPrecondition, "allow_shell"),
        case(SPAWN, spawn(pb::ProcessSpec { cwd: b"/tmp\0x".to_vec(), ..argv(&[b"true"]) }), bad, "cwd"),
        case(SPAWN, spawn(env(b"", b"v")), bad, "env"),
        case(SPAWN, spawn(env(b"A=B", b"v")), bad, "A=B"),
        case(SPAWN, spawn(env(b"A\0", b"v")), bad, "env"),
        case(SPAWN, spawn(env(b"A", b"v\0")), bad, "env"),
        case(SPAWN, spawn(env(b"NOTIFY_SOCKET", b"/x")), bad, "NOTIFY_SOCKET"),
        case(SPAWN, stdio(|s| s.stdin = pb::Stdio::Stdout as i32), bad, "stdin"),
        case(SPAWN, stdio(|s| s.stdout = pb::Stdio::Stdout as i32), bad, "stdout"),
        case(SPAWN, stdio(|s| s.stdin = 99), bad, "99"),
        case(SPAWN, stdio(|s| s.stderr = -1), bad, "-1"),
        case(SPAWN, spawn(argv(&[b"/nonexistent/program"])), Code::NotFound, "/nonexistent/program"),
        case(SPAWN, spawn(argv(&[fx.file.as_bytes()])), Code::PermissionDenied, &fx.file),
        case(SIG, sig("SIGNOPE"), bad, "SIGNOPE"),
        case(SIG, sig(""), bad, "signal"),
        case(SIG, sig("0"), bad, "\"0\""),
        case(SIG, sig("-9"), bad, "-9"),
        case(SIG, sig("99999999999"), bad, "99999999999"),
        case(SIG, sig("RTMIN+999"), bad, "RTMIN+999"),
        case(SIG, sig("SIG\0TERM"), bad, "signal"),
        case("ProcessService/WriteStdin", stdin, Code::ResourceExhausted, "262144"),
        case_stream(RO, Vec::<pb::ReadOutputRequest>::new(), bad, "ReadOutputRequest"),
        case_stream(RO, vec![read(0, 0)], bad, "fd"),
        case_stream(RO, vec![read(99, 0)], bad, "99"),
        case_stream(RO, vec![read(-1, 0)], bad, "-1"),
        case_stream(RO, vec![read(1, u64::MAX)], Code::OutOfRange, "18446744073709551615"),
        raw_case(RO, vec![read(1, 0).encode_to_vec(), vec![0x0a, 0x7f]], bad, "decode"),
        raw_case(RO, vec![read(1, 0).encode_to_vec(), oversized()], Code::ResourceExhausted, "262144"),
        case(FIFO, open(b""), bad, "path"),
        case(FIFO, open(b"/tmp/\0x"), bad, "path"),
        case(FIFO, open(b"/nonexistent/fifo"), Code::NotFound, "/nonexistent/fifo"),
        case(FIFO, open(fx.file.as_bytes()), bad, &fx.file),
        case(FIFO, open(&[b'/'; 5000]), bad, "/////"),
        case(SPAWN, spawn(argv(&[&[b'/'; 5000]])), bad, "/////"),
        case_stream("ProcessService/ReadFifo", Vec::<pb::ReadFifoRequest>::new(), bad, "ReadFifoRequest"),
        case_stream("ProcessService/ReadFifo", vec![read_fifo], Code::OutOfRange, "18446744073709551615"),
        case("ProcessService/WriteFifo", write_fifo, Code::FailedPrecondition, "reading"),
    ]
}

/// Signals, loops (names, the default loop), events, metrics.
#[rustfmt::skip]
fn misc_cases() -> Vec<Case> {
    const ADD: &str = "SignalService/AddSignalHandler";
    const REMOVE: &str = "SignalService/RemoveSignalHandler";
    const CREATE: &str = "LoopService/CreateLoop";
    const SUB: &str = "EventService/Subscribe";
    let (bad, off) = (Code::InvalidArgument, Code::FailedPrecondition);
    let add = |signal: &str| pb::AddSignalHandlerRequest { signal: signal.into(), ..Default::default() };
    let remove = |signal: &str| pb::RemoveSignalHandlerRequest { r#loop: String::new(), signal: signal.into() };
    let create = |name: &str| pb::CreateLoopRequest { r#loop: name.into(), ..Default::default() };
    let sub = |since_seq, kinds| pb::SubscribeRequest { since_seq, kinds, ..Default::default() };
    vec![
        case(ADD, add(""), bad, "signal"),
        case(ADD, add("SIGNOPE"), bad, "SIGNOPE"),
        case(ADD, add("0"), bad, "\"0\""),
        case(ADD, add("4294967296"), bad, "4294967296"),
        case(ADD, add("SIGKILL"), bad, "SIGKILL"),
        case(ADD, add("SIGSTOP"), bad, "SIGSTOP"),
        case(ADD, add("SIGSEGV"), bad, "SIGSEGV"),
        case(ADD, add("SIGTERM"), off, "SIGTERM"),
        case(ADD, add("SIGCHLD"), off, "SIGCHLD"),
        case(ADD, add(&"S".repeat(10_000)), bad, "SSSSSSSS"),
        case(REMOVE, remove(""), bad, "signal"),
        case(REMOVE, remove("nope"), bad, "nope"),
        case(REMOVE, remove("65"), bad, "65"),
        case(CREATE, create(""), bad, "loop name"),
        case(CREATE, create("default"), Code::AlreadyExists, "default"),
        case(CREATE, create("a\0b"), bad, "a\\0b"),
        case(CREATE, create(&"n".repeat(10_000)), bad, "nnnnnnnn"),
        case(CREATE, create(&"n".repeat(64)), bad, "loop name"),
        case(CREATE, create("a b"), bad, "a b"),
        case(CREATE, create("../x"), bad, "../x"),
        case("LoopService/CloseLoop", pb::CloseLoopRequest { r#loop: String::new() }, off, "default"),
        case("LoopService/CloseLoop", pb::CloseLoopRequest { r#loop: "default".into() }, off, "default"),
        case(SUB, sub(u64::MAX, vec![]), Code::OutOfRange, "18446744073709551615"),
        case(SUB, sub(0, vec![0]), bad, "event kind"),
        case(SUB, sub(0, vec![999]), bad, "999"),
        case(SUB, sub(0, vec![1, -1]), bad, "-1"),
        case("DaemonService/GetMetrics", pb::GetMetricsRequest { loops: vec!["default".into(), "ghost".into()] }, Code::NotFound, "ghost"),
    ]
}

/// The daemon's message limit in the sweep, small so that going past it is cheap.
const SWEEP_MESSAGE_LIMIT: usize = 262_144;

/// What every RPC must refuse, whatever its fields: bytes that are no protobuf, a
/// message over the limit, and (unary calls) no message at all.
fn generic_cases(rpcs: &std::collections::BTreeMap<String, bool>) -> Vec<Case> {
    let oversized = oversized();
    let mut cases = Vec::new();
    for (rpc, client_streams) in rpcs {
        let rpc: &'static str = Box::leak(rpc.clone().into_boxed_str());
        let limit = SWEEP_MESSAGE_LIMIT.to_string();
        cases.push(case_bytes(
            rpc,
            &[0xff, 0xff, 0xff, 0xff],
            Code::InvalidArgument,
            "decode",
        ));
        cases.push(case_bytes(
            rpc,
            &[0x0a, 0x7f, b'x'],
            Code::InvalidArgument,
            "decode",
        ));
        let mut big = case_bytes(rpc, &[], Code::ResourceExhausted, &limit);
        big.messages = vec![oversized.clone()];
        big.shown = format!("{} bytes", oversized.len());
        cases.push(big);
        if !client_streams {
            let none = Case {
                rpc,
                messages: Vec::new(),
                shown: "no message".into(),
                code: Code::InvalidArgument,
                needle: "request message".into(),
            };
            cases.push(none);
        }
    }
    cases
}

/// RPCs whose request has no field: only malformed bytes can be hostile.
const FIELDLESS: [&str; 2] = ["DaemonService/GetInfo", "LoopService/ListLoops"];

#[tokio::test]
async fn every_rpc_refuses_hostile_requests_at_once_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start_with(&format!(
        "[limits]\nmax_message_bytes = {SWEEP_MESSAGE_LIMIT}\n"
    ));
    let channel = daemon.channel().await;
    let fx = fixtures(&channel).await;
    let rpcs = every_rpc();
    let mut cases = loop_cases(&fx);
    cases.extend(closed_loop_cases(&fx));
    cases.extend(time_cases());
    cases.extend(id_cases());
    cases.extend(action_cases());
    cases.extend(batch_cases());
    cases.extend(net_cases(&fx));
    cases.extend(process_cases(&fx));
    cases.extend(misc_cases());

    let named: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.rpc).collect();
    let unknown: Vec<_> = named.iter().filter(|r| !rpcs.contains_key(**r)).collect();
    assert!(
        unknown.is_empty(),
        "cases for RPCs that do not exist: {unknown:?}"
    );
    let uncovered: Vec<_> = rpcs
        .keys()
        .filter(|r| !named.contains(r.as_str()) && !FIELDLESS.contains(&r.as_str()))
        .collect();
    assert!(
        uncovered.is_empty(),
        "RPCs without a hostile case: {uncovered:?}"
    );
    cases.extend(generic_cases(&rpcs));

    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let streaming = rpcs[case.rpc];
        if let Err(failure) = check(&channel, streaming, case).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
