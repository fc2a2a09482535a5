//! The build step between a loaded [`Config`] and a running router: every broker's trigger
//! index compiled, every trigger's delivery resolved, every destination checked.
//!
//! A [`Plan`] cannot be invalid, and building one starts nothing, so `triggerfish validate`,
//! `triggerfish test-filter` and config reloads share exactly the checks `serve` applies.

use std::num::NonZeroU32;
use std::sync::Arc;

use triggerfish_core::config::{
    Config, ConfigError, ConfigErrors, CustomResource, CustomSpec, Delivery, DeliveryOrder,
    Destination, FieldPath, Kind, ResourceId,
};
use triggerfish_core::event::DecodeLimits;
use triggerfish_core::filter::Filter;
use triggerfish_core::index::TriggerIndex;

use crate::store::BrokerKey;

/// A validated config, ready to run.
pub struct Plan {
    /// The config it was built from.
    pub config: Config,
    /// Brokers in config order.
    pub brokers: Vec<BrokerPlan>,
}

/// One broker: its compiled index and its triggers, in config order (index ids).
pub struct BrokerPlan {
    /// `namespace/name`.
    pub key: BrokerKey,
    /// The compiled trigger index.
    pub index: TriggerIndex,
    /// Triggers; position `i` is trigger id `i` of the index.
    pub triggers: Vec<Arc<TriggerPlan>>,
}

/// What a trigger's dispatcher needs. Two plans that compare equal can share a dispatcher
/// across a reload (its filter lives in the index, not here).
#[derive(Debug, PartialEq, Eq)]
pub struct TriggerPlan {
    /// `namespace/name`.
    pub key: String,
    /// `metadata.name`.
    pub name: String,
    /// The broker's `namespace/name`.
    pub broker: String,
    /// Where matching events go.
    pub subscriber: Destination,
    /// The resource an in-process subscriber refers to (an `Exec`, say), so that a change to
    /// it restarts the trigger's dispatcher on reload.
    pub subscriber_resource: Option<CustomResource>,
    /// The same for the dead-letter sink.
    pub dead_letter_resource: Option<CustomResource>,
    /// Retries and dead-lettering (the trigger's own, else the broker's).
    pub delivery: Option<Delivery>,
    /// Ordered or unordered.
    pub order: DeliveryOrder,
    /// Concurrency limit.
    pub max_in_flight: NonZeroU32,
}

impl Plan {
    /// Builds the plan of a loaded config.
    pub fn build(config: Config) -> Result<Plan, ConfigErrors> {
        let mut errors = Vec::new();
        let mut brokers = Vec::new();
        for broker in config.brokers() {
            let (ns, name) = (broker.meta.namespace.as_str(), broker.meta.name.as_str());
            let mut filters = Vec::new();
            let mut triggers = Vec::new();
            for trigger in config.triggers_of(ns, name) {
                match Filter::from_trigger(&config, trigger) {
                    Ok(f) => filters.push(f),
                    Err(e) => errors.push(*e),
                }
                let delivery = config.delivery_for(trigger).cloned();
                let subscriber_path = FieldPath::root().key("spec").key("subscriber");
                let subscriber_resource = check_destination(
                    &config,
                    &trigger.id,
                    &trigger.subscriber,
                    subscriber_path,
                    &mut errors,
                );
                let dls = delivery.as_ref().and_then(|d| d.dead_letter_sink.as_ref());
                let dead_letter_resource = dls.and_then(|dls| {
                    let path = FieldPath::root()
                        .key("spec")
                        .key("delivery")
                        .key("deadLetterSink");
                    check_destination(&config, &trigger.id, dls, path, &mut errors)
                });
                triggers.push(Arc::new(TriggerPlan {
                    key: format!("{}/{}", trigger.namespace(), trigger.name()),
                    name: trigger.name().to_owned(),
                    broker: format!("{ns}/{name}"),
                    subscriber: trigger.subscriber.clone(),
                    subscriber_resource,
                    dead_letter_resource,
                    delivery,
                    order: trigger.delivery_order,
                    max_in_flight: trigger.max_in_flight,
                }));
            }
            brokers.push(BrokerPlan {
                key: Arc::from(format!("{ns}/{name}")),
                index: TriggerIndex::build(filters),
                triggers,
            });
        }
        match ConfigErrors::from_vec(errors) {
            Some(errors) => Err(errors),
            None => Ok(Plan { config, brokers }),
        }
    }

    /// The broker with key `namespace/name`.
    pub fn broker(&self, key: &str) -> Option<&BrokerPlan> {
        self.brokers.iter().find(|b| &*b.key == key)
    }
}

/// Checks that an in-process destination exists and can run; returns the resource it names.
/// Destinations this build cannot deliver to are rejected, so that a config never loads with
/// a trigger whose events would all fail.
fn check_destination(
    config: &Config,
    id: &ResourceId,
    dest: &Destination,
    path: FieldPath,
    errors: &mut Vec<ConfigError>,
) -> Option<CustomResource> {
    let Destination::InProcess {
        kind,
        namespace,
        name,
    } = dest
    else {
        return None;
    };
    let kind = match *kind {
        "Exec" => Kind::Exec,
        #[cfg(feature = "media")]
        "WorkerPool" => Kind::WorkerPool,
        other => {
            errors.push(config.error_at(
                id,
                path.key("ref"),
                format!("{other} is not available in this build of triggerfish; use a uri, a Service, a Broker, Display, File, Exec or (with the media feature) WorkerPool"),
            ));
            return None;
        }
    };
    let Some(resource) = config.custom_resource(kind, namespace, name) else {
        errors.push(config.error_at(
            id,
            path.key("ref"),
            format!("there is no {kind} {namespace}/{name} in this config"),
        ));
        return None;
    };
    // Build it once to check it (templates, program); the runtime builds its own.
    if let CustomSpec::Exec(spec) = &resource.spec
        && let Err(e) =
            crate::sinks::exec::ExecSink::new(String::new(), spec, DecodeLimits::default())
    {
        errors.push(config.error_at(
            &resource.id,
            FieldPath::root().key("spec").key("command"),
            e,
        ));
        return None;
    }
    // Check that ONNX Runtime and the models are there; the runtime starts the pool.
    #[cfg(feature = "media")]
    if let CustomSpec::WorkerPool(spec) = &resource.spec
        && let Err(e) = crate::media::check(spec)
    {
        errors.push(config.error_at(&resource.id, FieldPath::root().key("spec"), e));
        return None;
    }
    Some(resource.clone())
}
