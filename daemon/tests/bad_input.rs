//! Bad input gets the right status, a message naming the bad value, and the daemon keeps
//! serving.

mod support;

use bytes::{Buf, BufMut};
use loopd_proto::pb;
use loopd_proto::{
    DaemonServiceClient, FutureServiceClient, LoopServiceClient, SchedulerServiceClient,
};
use pb::call_later_request::After;
use support::{Daemon, emit};
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
        assert!(
            matches!(status.code(), Code::Internal | Code::InvalidArgument),
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
