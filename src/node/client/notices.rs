//! A batch written as the callback's arguments, in the format of [`crate::node::notice`]
//! ([`ClientKind`]).

use napi::Result;

use super::delivered::delivered_handle;
use crate::client::Batch;
use crate::errors::ErrorCode;
use crate::node::notice::{ClientKind, Flat};
use crate::protocol::{ErrorBody, Value};
use crate::session::{ActionKey, ConnectionState, ErrorDetail, Notice, SessionError};
use crate::shapes::{Shaped, Shapes};

/// Writes `batch`'s notices, then its fatal error and its idle report; the acknowledgement
/// notices only when `acknowledgements` (someone listens for them).
pub(super) fn write_batch(
    out: &mut Flat,
    mut batch: Batch,
    acknowledgements: bool,
    mut shapes: Option<&mut Shapes>,
) -> Result<()> {
    for notice in batch.notices.drain(..) {
        if acknowledgements || !matches!(notice, Notice::Acknowledgement { .. }) {
            write_notice(out, notice, shapes.as_deref_mut())?;
        }
    }
    Batch::recycle(batch.notices);
    if let Some(err) = batch.fatal {
        out.kind(ClientKind::Fatal)?;
        out.error(err)?;
    }
    if let Some(cycle) = batch.idle {
        out.kind(ClientKind::Idle)?;
        out.number(cycle as f64)?;
    }
    Ok(())
}

/// Writes `notice` in the format of [`ClientKind`]; an action of a shape `shapes` has or takes
/// (see [`crate::shapes`]) as a shaped action, after the shape's notice if it is new.
fn write_notice(out: &mut Flat, notice: Notice, shapes: Option<&mut Shapes>) -> Result<()> {
    match notice {
        Notice::Connect => out.kind(ClientKind::Connect),
        Notice::Drain => out.kind(ClientKind::Drain),
        Notice::Action {
            id,
            key,
            kind,
            parameters,
        } => {
            // SAFETY: `out`'s environment, on its thread, in its open handle scope.
            let delivered = unsafe { delivered_handle(out.env(), &id, key) }?;
            let shape = match shapes.and_then(|shapes| shapes.shape(&kind, &parameters)) {
                None => None,
                Some(Shaped::Known(shape)) => Some(shape),
                Some(Shaped::New(shape, kind, keys)) => {
                    out.kind(ClientKind::Shape)?;
                    out.number(f64::from(shape))?;
                    out.string(kind)?;
                    out.object(keys.iter().map(|k| &**k).collect::<Vec<&str>>())?;
                    Some(shape)
                }
            };
            match (shape, parameters) {
                (Some(shape), Value::Map(entries)) => {
                    out.kind(ClientKind::ShapedAction)?;
                    out.value(id)?;
                    out.number(f64::from(shape))?;
                    out.raw(delivered)?;
                    for (_, value) in entries {
                        out.value(value)?;
                    }
                    Ok(())
                }
                (_, parameters) => {
                    out.kind(ClientKind::Action)?;
                    out.value(id)?;
                    out.string(&kind)?;
                    out.value(parameters)?;
                    out.raw(delivered)
                }
            }
        }
        Notice::Acknowledgement {
            correlid,
            status,
            error,
        } => {
            out.kind(ClientKind::Acknowledgement)?;
            out.value(correlid)?;
            out.number(status as f64)?;
            let error = error.as_ref();
            out.optional_string(error.and_then(|e| e.code.as_deref()))?;
            out.optional_string(error.map(|e| e.message.as_str()))
        }
        Notice::EventDone {
            seq,
            result: Ok(()),
        } => {
            out.kind(ClientKind::Done)?;
            out.number(seq as f64)
        }
        Notice::EventDone {
            seq,
            result: Err(err),
        } => {
            out.kind(ClientKind::Failed)?;
            out.number(seq as f64)?;
            let refused = matches!(err.code, ErrorCode::Gateway(_) | ErrorCode::Ack);
            out.error(err)?;
            out.object(refused)
        }
        Notice::Reconnect => out.kind(ClientKind::Reconnect),
        Notice::Disconnect => out.kind(ClientKind::Disconnect),
        Notice::Error(err) => {
            out.kind(ClientKind::Error)?;
            out.error_detail(err)
        }
        Notice::Recovered(err) => {
            out.kind(ClientKind::Recovered)?;
            out.error(err)
        }
        Notice::State {
            state,
            delay,
            failed,
        } => {
            out.kind(ClientKind::State)?;
            out.string(state.name())?;
            out.optional_number(delay.map(|d| d.as_secs_f64() * 1000.0))?;
            out.object(failed)
        }
    }
}

/// A batch with a notice of every kind, for `__test__/notices.test.js` (see
/// `node::notice::notice_samples`).
pub(crate) fn write_samples(out: &mut Flat) -> Result<()> {
    let err = |code: ErrorCode| SessionError::new(code, "sample");
    let action = |id: Value, parameters: Value| Notice::Action {
        key: ActionKey::from(id.clone()),
        id,
        kind: "sample".to_owned(),
        parameters,
    };
    // Two actions of one shape: the shape's notice comes before the first only.
    let shaped = |n: f64| {
        Value::Map(vec![
            ("n".to_owned(), Value::Number(n)),
            ("list".to_owned(), Value::Array(vec![Value::Number(n)])),
        ])
    };
    let notices = vec![
        Notice::Connect,
        Notice::Drain,
        action(Value::String("a1".into()), Value::Nil),
        action(Value::Array(vec![Value::Number(1.0)]), Value::Nil),
        action(Value::String("a2".into()), shaped(2.0)),
        action(Value::Array(vec![Value::Number(3.0)]), shaped(3.0)),
        Notice::Acknowledgement {
            correlid: Value::String("e1".into()),
            status: 1,
            error: Some(ErrorBody {
                code: Some("C1".to_owned()),
                message: "rejected".to_owned(),
            }),
        },
        Notice::Acknowledgement {
            correlid: Value::String("e2".into()),
            status: 0,
            error: None,
        },
        Notice::EventDone {
            seq: 1,
            result: Ok(()),
        },
        Notice::EventDone {
            seq: 2,
            result: Err(err(ErrorCode::Closed)),
        },
        Notice::Reconnect,
        Notice::Disconnect,
        Notice::Error(err(ErrorCode::ConnectionReset)),
        Notice::Error(err(ErrorCode::Proxy).with_detail(Some(ErrorDetail::ProxyStatus(407)))),
        Notice::Error(err(ErrorCode::Proxy).with_detail(Some(ErrorDetail::SocksReply(2)))),
        Notice::Recovered(err(ErrorCode::Closed)),
        Notice::State {
            state: ConnectionState::Backoff,
            delay: Some(std::time::Duration::from_millis(250)),
            failed: true,
        },
    ];
    write_batch(
        out,
        Batch {
            notices,
            fatal: Some(err(ErrorCode::Internal)),
            idle: Some(7),
        },
        true,
        Some(&mut Shapes::default()),
    )
}
