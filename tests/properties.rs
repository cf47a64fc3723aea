//! Property tests standing in for fuzzing (cargo-fuzz needs a nightly
//! toolchain, which CI machines are not promised). They feed arbitrary input
//! to the mask parser, to request validation and mask application, and to
//! the protobuf decoding of every request message. No input may panic; every
//! input is accepted or refused with INVALID_ARGUMENT.
//!
//! `make fuzz` runs them with many more cases (PROPTEST_CASES).

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use conversation_service::{
    domain::{
        AgentKind, Channel, Conversation, ConversationFields, DirectoryEntry, FieldPath, Mask,
        Status,
    },
    error::Error,
    grpc::convert,
    proto::v1 as pb,
};
use proptest::prelude::*;
use prost::Message;
use uuid::Uuid;

/// Words the parser knows, mixed with noise, so paths are often near-valid.
fn path() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "subject",
        "status",
        "priority",
        "assignee_id",
        "assignee_type",
        "hold_until",
        "tags",
        "attributes",
        "is_spam",
        "spam_score",
        "first_response_at",
        "last_message_at",
        "id",
        "etag",
        "channel",
        "customer_id",
        "origin_agent_id",
        "*",
        "attributes.k",
        "attributes.`a b`",
        "attributes.`x``y`",
        "hold_until.seconds",
    ])
    .prop_map(str::to_owned);
    prop_oneof![known, any::<String>(), "[a-z_.`*]{0,24}"]
}

fn uuid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(Uuid::nil().to_string()),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string().to_uppercase()),
        any::<String>(),
    ]
}

fn enum_number() -> impl Strategy<Value = i32> {
    prop_oneof![0..5i32, any::<i32>()]
}

fn timestamp() -> impl Strategy<Value = prost_types::Timestamp> {
    let seconds = prop_oneof![
        -62_135_596_800i64..=253_402_300_799i64,
        any::<i64>(),
        (1_700_000_000i64..1_900_000_000i64)
    ];
    let nanos = prop_oneof![0..1_000_000_000i32, any::<i32>()];
    (seconds, nanos).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
}

prop_compose! {
    fn conversation()(
        (id, channel, customer_id, subject, status, priority) in (
            uuid_text(), enum_number(), uuid_text(),
            prop::option::of(prop_oneof![".{0,40}", ".{490,510}"]),
            enum_number(), enum_number(),
        ),
        (assignee_id, assignee_type, origin_agent_id, hold_until) in (
            prop::option::of(uuid_text()), enum_number(), prop::option::of(uuid_text()),
            prop::option::of(timestamp()),
        ),
        (tags, attributes, is_spam, spam_score) in (
            prop::collection::vec(any::<String>(), 0..60),
            prop::collection::btree_map(".{0,70}", ".{0,40}", 0..110),
            any::<bool>(),
            prop::option::of(prop::num::f64::ANY),
        ),
        (first_response_at, last_message_at, etag) in (
            prop::option::of(timestamp()), prop::option::of(timestamp()), ".{0,12}",
        ),
    ) -> pb::Conversation {
        pb::Conversation {
            id, channel, customer_id, subject, status, priority, assignee_id, assignee_type,
            origin_agent_id, hold_until, tags, attributes: attributes.into_iter().collect::<BTreeMap<_, _>>(),
            is_spam, spam_score, first_response_at, last_message_at, etag,
            ..Default::default()
        }
    }
}

fn stored() -> Conversation {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    Conversation {
        id: Uuid::nil(),
        workspace_id: Uuid::nil(),
        channel: Channel::Chat,
        customer_id: Uuid::nil(),
        origin_agent_id: Some(Uuid::from_u128(7)),
        fields: ConversationFields {
            status: Status::OnHold,
            hold_until: Some(at),
            ..Default::default()
        },
        closed_at: None,
        created_at: at,
        updated_at: at,
        version: 3,
    }
}

fn directory_entry() -> impl Strategy<Value = Option<DirectoryEntry>> {
    prop::option::of(prop_oneof![
        Just(DirectoryEntry::User),
        Just(DirectoryEntry::Missing),
        any::<bool>().prop_map(|active| DirectoryEntry::Agent {
            kind: AgentKind::Chat,
            active
        }),
        any::<bool>().prop_map(|active| DirectoryEntry::Agent {
            kind: AgentKind::Email,
            active
        }),
    ])
}

fn only_invalid_argument<T>(result: Result<T, Error>) -> Result<(), TestCaseError> {
    match result {
        Ok(_) | Err(Error::InvalidArgument(_)) => Ok(()),
        Err(other) => Err(TestCaseError::fail(format!("unexpected error {other:?}"))),
    }
}

proptest! {
    #[test]
    fn the_mask_parser_accepts_or_names_update_mask(paths in prop::collection::vec(path(), 0..8)) {
        match Mask::parse(&paths) {
            Ok(_) => {}
            Err(violations) => {
                prop_assert!(!violations.is_empty());
                for violation in violations.as_slice() {
                    prop_assert_eq!(&violation.field, "update_mask");
                    prop_assert!(violation.description.len() < 400);
                }
            }
        }
    }

    #[test]
    fn a_quoted_attribute_key_parses_back_to_itself(key in ".{1,64}") {
        let quoted = format!("attributes.`{}`", key.replace('`', "``"));
        let mask = Mask::parse(&[quoted]).map_err(|v| TestCaseError::fail(format!("{v:?}")))?;
        prop_assert_eq!(mask, Mask::Paths(vec![FieldPath::Attribute(key)]));
    }

    #[test]
    fn create_requests_are_accepted_or_invalid_argument(
        conversation in prop::option::of(conversation()),
        request_id in uuid_text(),
    ) {
        only_invalid_argument(convert::create_request(pb::CreateConversationRequest { conversation, request_id }))?;
    }

    #[test]
    fn updates_validate_and_apply_without_panicking(
        conversation in conversation(),
        paths in prop::option::of(prop::collection::vec(path(), 0..6)),
        assignee in directory_entry(),
    ) {
        let request = pb::UpdateConversationRequest {
            conversation: Some(conversation),
            update_mask: paths.map(|paths| prost_types::FieldMask { paths }),
        };
        if let Ok(command) = convert::update_request(request) {
            let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
            // Ok (possibly unchanged) or a list of violations; never a panic.
            if let Err(violations) = command.patch.apply(&stored(), assignee, now) {
                prop_assert!(!violations.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(request) = pb::CreateConversationRequest::decode(bytes.as_slice()) {
            only_invalid_argument(convert::create_request(request))?;
        }
        if let Ok(request) = pb::UpdateConversationRequest::decode(bytes.as_slice()) {
            only_invalid_argument(convert::update_request(request))?;
        }
        if let Ok(request) = pb::GetConversationRequest::decode(bytes.as_slice()) {
            only_invalid_argument(convert::conversation_id(&request.id, "id"))?;
        }
    }

    #[test]
    fn encoded_valid_messages_decode_to_the_same_validation(conversation in conversation()) {
        let request = pb::CreateConversationRequest { conversation: Some(conversation), request_id: String::new() };
        let decoded = pb::CreateConversationRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        // Compared as bytes: a NaN spam_score is not equal to itself.
        prop_assert_eq!(decoded.encode_to_vec(), request.encode_to_vec());
        let direct = convert::create_request(request).is_ok();
        prop_assert_eq!(convert::create_request(decoded).is_ok(), direct);
    }
}
