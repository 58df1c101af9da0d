//! Checks the rules of the wire contract on the compiled descriptors, so a
//! proto change that breaks them fails `cargo test` instead of a review.
//!
//! Comments are read from `source_code_info`, which protox keeps: a location's
//! `path` is the chain of (field number, index) pairs from the file down to the
//! element, e.g. `[4, 2, 2, 0]` is message 2, field 0.

use std::collections::{BTreeMap, HashMap, HashSet};

use loopd_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

/// Field numbers of descriptor.proto, used in source code info paths.
mod tag {
    pub const FILE_MESSAGE: i32 = 4;
    pub const FILE_ENUM: i32 = 5;
    pub const FILE_SERVICE: i32 = 6;
    pub const MESSAGE_FIELD: i32 = 2;
    pub const MESSAGE_NESTED: i32 = 3;
    pub const MESSAGE_ENUM: i32 = 4;
    pub const MESSAGE_ONEOF: i32 = 8;
    pub const ENUM_VALUE: i32 = 2;
    pub const SERVICE_METHOD: i32 = 2;
}

/// The gRPC status codes an RPC comment may name.
const STATUS_CODES: &[&str] = &[
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// The files of `package loopd.v1` (the set also holds google/protobuf/*).
fn loopd_files() -> Vec<FileDescriptorProto> {
    let files: Vec<_> = descriptor_set()
        .file
        .into_iter()
        .filter(|f| f.package() == "loopd.v1")
        .collect();
    assert!(!files.is_empty(), "no loopd.v1 file in the descriptor set");
    files
}

/// One element of a proto file that must be documented.
struct Element {
    /// Human name, e.g. `loopd.v1.CallLaterRequest.delay`.
    name: String,
    /// Its source code info path.
    path: Vec<i32>,
}

/// Every service, method, message, field, oneof, enum and enum value of `file`.
fn elements(file: &FileDescriptorProto) -> Vec<Element> {
    let pkg = file.package();
    let mut out = Vec::new();
    for (i, service) in file.service.iter().enumerate() {
        let (name, path) = (
            format!("{pkg}.{}", service.name()),
            vec![tag::FILE_SERVICE, i as i32],
        );
        for (j, method) in service.method.iter().enumerate() {
            let path = [&path[..], &[tag::SERVICE_METHOD, j as i32]].concat();
            out.push(Element {
                name: format!("{name}.{}", method.name()),
                path,
            });
        }
        out.push(Element { name, path });
    }
    for (i, message) in file.message_type.iter().enumerate() {
        message_elements(message, pkg, vec![tag::FILE_MESSAGE, i as i32], &mut out);
    }
    for (i, enumeration) in file.enum_type.iter().enumerate() {
        enum_elements(enumeration, pkg, vec![tag::FILE_ENUM, i as i32], &mut out);
    }
    out
}

fn message_elements(
    message: &DescriptorProto,
    scope: &str,
    path: Vec<i32>,
    out: &mut Vec<Element>,
) {
    let name = format!("{scope}.{}", message.name());
    let child = |kind: i32, index: usize| [&path[..], &[kind, index as i32]].concat();
    for (j, field) in message.field.iter().enumerate() {
        let path = child(tag::MESSAGE_FIELD, j);
        out.push(Element {
            name: format!("{name}.{}", field.name()),
            path,
        });
    }
    for (j, oneof) in message.oneof_decl.iter().enumerate() {
        if is_synthetic(message, j) {
            continue;
        }
        let path = child(tag::MESSAGE_ONEOF, j);
        out.push(Element {
            name: format!("{name}.{} (oneof)", oneof.name()),
            path,
        });
    }
    for (j, nested) in message.nested_type.iter().enumerate() {
        message_elements(nested, &name, child(tag::MESSAGE_NESTED, j), out);
    }
    for (j, enumeration) in message.enum_type.iter().enumerate() {
        enum_elements(enumeration, &name, child(tag::MESSAGE_ENUM, j), out);
    }
    out.push(Element { name, path });
}

/// A `proto3 optional` field gets a oneof of its own that the source never
/// declared, so it has no comment to check.
fn is_synthetic(message: &DescriptorProto, oneof: usize) -> bool {
    message
        .field
        .iter()
        .any(|f| f.oneof_index == Some(oneof as i32) && f.proto3_optional())
}

fn enum_elements(
    enumeration: &EnumDescriptorProto,
    scope: &str,
    path: Vec<i32>,
    out: &mut Vec<Element>,
) {
    let name = format!("{scope}.{}", enumeration.name());
    for (j, value) in enumeration.value.iter().enumerate() {
        let path = [&path[..], &[tag::ENUM_VALUE, j as i32]].concat();
        out.push(Element {
            name: format!("{name}.{}", value.name()),
            path,
        });
    }
    out.push(Element { name, path });
}

/// Leading comments of `file` by source code info path.
fn leading_comments(file: &FileDescriptorProto) -> HashMap<Vec<i32>, String> {
    let info = file.source_code_info.as_ref().unwrap_or_else(|| {
        panic!(
            "{} has no source_code_info: compile with protox::compile",
            file.name()
        )
    });
    info.location
        .iter()
        .map(|loc| (loc.path.clone(), loc.leading_comments().trim().to_owned()))
        .collect()
}

/// Every enum of `file`, nested ones included, with its full name.
fn enums(file: &FileDescriptorProto) -> Vec<(String, EnumDescriptorProto)> {
    fn walk(message: &DescriptorProto, scope: &str, out: &mut Vec<(String, EnumDescriptorProto)>) {
        let name = format!("{scope}.{}", message.name());
        out.extend(
            message
                .enum_type
                .iter()
                .map(|e| (format!("{name}.{}", e.name()), e.clone())),
        );
        message.nested_type.iter().for_each(|m| walk(m, &name, out));
    }
    let pkg = file.package();
    let mut out: Vec<_> = file
        .enum_type
        .iter()
        .map(|e| (format!("{pkg}.{}", e.name()), e.clone()))
        .collect();
    file.message_type
        .iter()
        .for_each(|m| walk(m, pkg, &mut out));
    out
}

/// `HandleState` -> `HANDLE_STATE`, the prefix of its values.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn every_service_and_rpc_is_present() {
    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("loopd.v1.DaemonService", vec!["GetInfo", "GetMetrics"]),
        ("loopd.v1.EventService", vec!["Subscribe"]),
        (
            "loopd.v1.FutureService",
            vec![
                "CreateFuture",
                "SetResult",
                "SetException",
                "CancelFuture",
                "GetFuture",
                "WaitFuture",
            ],
        ),
        (
            "loopd.v1.LoopService",
            vec![
                "ListLoops",
                "CreateLoop",
                "GetLoop",
                "StartLoop",
                "StopLoop",
                "CloseLoop",
                "SetDebug",
                "GetTime",
            ],
        ),
        (
            "loopd.v1.NetService",
            vec![
                "CreateServer",
                "ListServers",
                "GetServer",
                "CloseServer",
                "StartServing",
                "OpenConnection",
                "ListTransports",
                "GetTransport",
                "Write",
                "WriteEof",
                "CloseTransport",
                "AbortTransport",
                "PauseReading",
                "ResumeReading",
                "SetWriteBufferLimits",
                "ReadTransport",
                "CreateDatagramEndpoint",
                "SendDatagram",
                "CloseDatagramEndpoint",
                "Resolve",
                "ReverseResolve",
                "Sendfile",
                "StartTls",
                "GetDatagramEndpoint",
                "ListDatagramEndpoints",
            ],
        ),
        (
            "loopd.v1.ProcessService",
            vec![
                "Spawn",
                "WriteStdin",
                "CloseStdin",
                "SendSignal",
                "Terminate",
                "Kill",
                "Wait",
                "GetProcess",
                "ListProcesses",
                "ReadOutput",
                "OpenFifo",
                "ReadFifo",
                "WriteFifo",
                "CloseFifo",
            ],
        ),
        (
            "loopd.v1.SignalService",
            vec![
                "AddSignalHandler",
                "RemoveSignalHandler",
                "ListSignalHandlers",
            ],
        ),
        (
            "loopd.v1.SchedulerService",
            vec![
                "CallSoon",
                "CallLater",
                "CallAt",
                "CallAtWallTime",
                "ScheduleBatch",
                "Schedule",
                "CancelHandle",
                "GetHandle",
                "ListHandles",
            ],
        ),
    ]);
    let found: BTreeMap<String, Vec<String>> = loopd_files()
        .iter()
        .flat_map(|f| &f.service)
        .map(|s| {
            (
                format!("loopd.v1.{}", s.name()),
                s.method.iter().map(|m| m.name().to_owned()).collect(),
            )
        })
        .collect();
    let expected: BTreeMap<String, Vec<String>> = expected
        .into_iter()
        .map(|(s, ms)| (s.to_owned(), ms.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn every_enum_starts_with_unspecified_zero() {
    for file in loopd_files() {
        for (name, enumeration) in enums(&file) {
            let prefix = screaming_snake(enumeration.name());
            let first = enumeration
                .value
                .first()
                .unwrap_or_else(|| panic!("{name} has no value"));
            assert_eq!(
                first.name(),
                format!("{prefix}_UNSPECIFIED"),
                "first value of {name}"
            );
            assert_eq!(first.number(), 0, "{} of {name}", first.name());
            for value in &enumeration.value {
                assert!(
                    value.name().starts_with(&format!("{prefix}_")),
                    "{} of {name}",
                    value.name()
                );
            }
        }
    }
}

#[test]
fn every_element_has_a_leading_comment() {
    let mut missing = Vec::new();
    for file in loopd_files() {
        let comments = leading_comments(&file);
        for element in elements(&file) {
            if comments.get(&element.path).is_none_or(String::is_empty) {
                missing.push(element.name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no leading comment on:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_rpc_comment_names_a_status_code() {
    let mut silent = Vec::new();
    for file in loopd_files() {
        let comments = leading_comments(&file);
        for (i, service) in file.service.iter().enumerate() {
            for (j, method) in service.method.iter().enumerate() {
                let path = vec![tag::FILE_SERVICE, i as i32, tag::SERVICE_METHOD, j as i32];
                let comment = comments.get(&path).map_or("", String::as_str);
                if !STATUS_CODES.iter().any(|code| comment.contains(code)) {
                    silent.push(format!("{}.{}", service.name(), method.name()));
                }
            }
        }
    }
    assert!(
        silent.is_empty(),
        "RPC comments naming no status code:\n{}",
        silent.join("\n")
    );
}

#[test]
fn resource_ids_are_typed() {
    let rules: &[(&str, Type, Label)] = &[
        ("loop", Type::String, Label::Optional),
        ("handle_id", Type::Uint64, Label::Optional),
        ("future_id", Type::Uint64, Label::Optional),
        ("handle_ids", Type::Uint64, Label::Repeated),
        ("future_ids", Type::Uint64, Label::Repeated),
    ];
    for file in loopd_files() {
        for message in &file.message_type {
            for field in &message.field {
                if let Some((_, ty, label)) = rules.iter().find(|(name, ..)| *name == field.name())
                {
                    let what = format!("{}.{}", message.name(), field.name());
                    assert_eq!(field.r#type(), *ty, "type of {what}");
                    assert_eq!(field.label(), *label, "label of {what}");
                }
            }
        }
    }
}

#[test]
fn every_import_is_in_the_set() {
    // Reflection clients resolve imports from the same set, so it must be closed.
    let set = descriptor_set();
    let names: HashSet<&str> = set.file.iter().map(|f| f.name()).collect();
    for file in &set.file {
        for dependency in &file.dependency {
            assert!(
                names.contains(dependency.as_str()),
                "{} imports missing {dependency}",
                file.name()
            );
        }
    }
}
