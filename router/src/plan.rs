//! The build step between a loaded [`Config`] and a running router: every broker's trigger
//! index compiled, every trigger's delivery resolved, every destination checked.
//!
//! A [`Plan`] cannot be invalid, and building one starts nothing, so `triggerfish validate`,
//! `triggerfish test-filter` and config reloads share exactly the checks `serve` applies.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use triggerfish_core::config::{
    Batching, Config, ConfigError, ConfigErrors, CustomResource, CustomSpec, Delivery,
    DeliveryOrder, Destination, FieldPath, Kind, OidcSpec, RateLimitsSpec, RateSpec, ResourceId,
    Trigger,
};
use triggerfish_core::cron::recurring::Recurring;
use triggerfish_core::event::DecodeLimits;
use triggerfish_core::filter::Filter;
use triggerfish_core::index::TriggerIndex;
use triggerfish_core::policy::Policies;

use crate::auth::outbound::{Credential, Minter};
use crate::auth::{Secret, read_secret};
use crate::store::BrokerKey;

/// A validated config, ready to run.
pub struct Plan {
    /// The config it was built from.
    pub config: Config,
    /// Brokers in config order.
    pub brokers: Vec<BrokerPlan>,
    /// Schedules (PingSources) in config order.
    pub sources: Vec<SourcePlan>,
    /// Limits of the scheduler sink.
    pub scheduler: crate::scheduler::Limits,
    /// Sender authentication, event policies and ingress rate limits.
    pub auth: AuthPlan,
    /// TLS of the HTTP listeners, loaded (so that bad files fail the load). Used at start;
    /// a reload keeps the listeners' TLS as it is (the files themselves are watched).
    pub tls: Option<Arc<crate::tls::ReloadingTls>>,
    /// Event sources (OSS, S3, GitHub, registries, watched directories) in config order.
    pub event_sources: Vec<crate::sources::EventSourcePlan>,
}

/// What the ingress gate needs, with every secret and key file already read.
pub struct AuthPlan {
    /// Static tokens and their identities.
    pub tokens: Vec<(Secret, Arc<str>)>,
    /// JWT verification.
    pub oidc: Option<OidcPlan>,
    /// The compiled `EventPolicy` resources and the default policy.
    pub policies: Policies,
    /// Ingress token buckets.
    pub rate_limits: RateLimitsSpec,
}

/// JWT verification settings.
pub struct OidcPlan {
    /// The spec (compared across reloads to keep fetched keys).
    pub spec: OidcSpec,
    /// The keys of `jwksFile`, read now so that a bad file fails the load.
    pub initial_keys: Option<jsonwebtoken::jwk::JwkSet>,
    /// The audience of each broker `namespace/name`.
    pub audiences: HashMap<String, String>,
}

/// A schedule of the config and the delivery of its events.
pub struct SourcePlan {
    /// `namespace/pingsources/name`.
    pub key: Arc<str>,
    /// When it fires and what it sends.
    pub recurring: Recurring,
    /// Delivery toward its sink (a dispatcher, like a trigger's).
    pub delivery: Arc<TriggerPlan>,
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
    /// Whether replies from the subscriber re-enter the broker (triggers: yes; the delivery
    /// of a source's events: no, as in Knative).
    pub replies: bool,
    /// The bearer token requests to the subscriber carry.
    pub credential: Option<Credential>,
    /// Deliveries per second toward the subscriber, if limited.
    pub rate_limit: Option<RateSpec>,
    /// Batched content mode toward an HTTP(S) subscriber (`spec.batch`).
    pub http_batch: Option<Batching>,
}

impl Plan {
    /// Builds the plan of a loaded config.
    pub fn build(config: Config) -> Result<Plan, ConfigErrors> {
        let mut errors = Vec::new();
        let auth = build_auth(&config, &mut errors);
        let tls =
            config.server().tls.as_ref().and_then(|spec| {
                match crate::tls::ReloadingTls::load(spec) {
                    Ok(t) => Some(Arc::new(t)),
                    Err(e) => {
                        let path = FieldPath::root().key("spec").key("tls");
                        match config.server_id() {
                            Some(id) => errors.push(config.error_at(id, path, e.to_string())),
                            None => tracing::error!(error = %e, "Server.spec.tls"),
                        }
                        None
                    }
                }
            });
        let minter = auth_minter(&config, &mut errors);
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
                    replies: true,
                    credential: credential(&config, trigger, minter.as_ref(), &mut errors),
                    rate_limit: trigger.rate_limit,
                    http_batch: trigger.http_batch,
                }));
            }
            brokers.push(BrokerPlan {
                key: Arc::from(format!("{ns}/{name}")),
                index: TriggerIndex::build(filters),
                triggers,
            });
        }
        let mut sources = Vec::new();
        let mut scheduler = crate::scheduler::Limits::default();
        for resource in config.custom() {
            let (ns, name) = (
                resource.meta.namespace.as_str(),
                resource.meta.name.as_str(),
            );
            match &resource.spec {
                CustomSpec::PingSource(spec) => {
                    let recurring = match Recurring::from_ping_source(ns, name, spec) {
                        Ok(r) => r,
                        Err(invalid) => {
                            errors.extend(
                                invalid
                                    .into_iter()
                                    .map(|i| config.error_at(&resource.id, i.path, i.message)),
                            );
                            continue;
                        }
                    };
                    let Some(sink) = resource.sink.clone() else {
                        continue;
                    };
                    let sink_resource = check_destination(
                        &config,
                        &resource.id,
                        &sink,
                        FieldPath::root().key("spec").key("sink"),
                        &mut errors,
                    );
                    let key = format!("{ns}/pingsources/{name}");
                    sources.push(SourcePlan {
                        key: Arc::from(key.as_str()),
                        recurring,
                        delivery: Arc::new(TriggerPlan {
                            key,
                            name: name.to_owned(),
                            broker: format!("{ns}/-"),
                            subscriber: sink,
                            subscriber_resource: sink_resource,
                            dead_letter_resource: None,
                            delivery: resource.delivery.clone(),
                            order: DeliveryOrder::Unordered,
                            max_in_flight: NonZeroU32::MIN,
                            replies: false,
                            credential: None,
                            rate_limit: None,
                            http_batch: None,
                        }),
                    });
                }
                CustomSpec::Scheduler(spec) if name == "default" => {
                    if let Some(d) = spec.max_delay {
                        scheduler.max_delay = d.get();
                    }
                    if let Some(n) = spec.max_pending {
                        scheduler.max_pending = n.get() as usize;
                    }
                    if let Some(n) = spec.max_schedules {
                        scheduler.max_schedules = n.get() as usize;
                    }
                }
                CustomSpec::Scheduler(_) => errors.push(config.error_at(
                    &resource.id,
                    FieldPath::root().key("metadata").key("name"),
                    "there is one scheduler, named default",
                )),
                _ => {}
            }
        }
        let event_sources = crate::sources::plan(&config, &mut errors);
        match ConfigErrors::from_vec(errors) {
            Some(errors) => Err(errors),
            None => Ok(Plan {
                config,
                brokers,
                sources,
                scheduler,
                auth,
                tls,
                event_sources,
            }),
        }
    }

    /// The broker with key `namespace/name`.
    pub fn broker(&self, key: &str) -> Option<&BrokerPlan> {
        self.brokers.iter().find(|b| &*b.key == key)
    }
}

/// Reads the secrets and key files of `Server.spec.auth` and compiles the event policies.
fn build_auth(config: &Config, errors: &mut Vec<ConfigError>) -> AuthPlan {
    let spec = &config.server().auth;
    let at = FieldPath::root().key("spec").key("auth");
    let mut fail = |path: FieldPath, message: String| match config.server_id() {
        Some(id) => errors.push(config.error_at(id, path, message)),
        // Without a Server document every field has its default, and defaults do not fail.
        None => tracing::error!(%message, "Server.spec.auth"),
    };
    let mut tokens = Vec::with_capacity(spec.tokens.len());
    let mut seen = HashMap::new();
    for (i, t) in spec.tokens.iter().enumerate() {
        match read_secret(t.token_file.as_deref(), t.token_env.as_deref()) {
            Ok(secret) => {
                if let Some(other) = seen.insert(secret.clone(), i) {
                    fail(
                        at.key("tokens").index(i),
                        format!(
                            "the same token as tokens[{other}]: each token must name one identity"
                        ),
                    );
                }
                tokens.push((secret, Arc::from(t.identity.as_str())));
            }
            Err(e) => fail(at.key("tokens").index(i), e),
        }
    }
    let oidc = spec.oidc.as_ref().and_then(|oidc| {
        let path = at.key("oidc");
        let initial_keys = match (&oidc.jwks_file, &oidc.jwks_url) {
            (Some(file), None) => match crate::auth::jwks::read_jwks_file(file) {
                Ok(set) => Some(set),
                Err(e) => {
                    fail(path.key("jwksFile"), e);
                    return None;
                }
            },
            (None, Some(url)) => {
                if let Err(e) = url.parse::<http::Uri>() {
                    fail(path.key("jwksUrl"), format!("not a URL: {e}"));
                    return None;
                }
                None
            }
            _ => {
                fail(path, "give exactly one of jwksFile and jwksUrl".into());
                return None;
            }
        };
        let template = oidc
            .audience
            .as_deref()
            .unwrap_or("eventing.knative.dev/broker/{namespace}/{name}");
        let audiences = config
            .brokers()
            .iter()
            .map(|b| {
                (
                    format!("{}/{}", b.meta.namespace, b.meta.name),
                    template
                        .replace("{namespace}", &b.meta.namespace)
                        .replace("{name}", &b.meta.name),
                )
            })
            .collect();
        Some(OidcPlan {
            spec: oidc.clone(),
            initial_keys,
            audiences,
        })
    });
    let policies = match Policies::build(config) {
        Ok(p) => p,
        Err(e) => {
            errors.extend(e);
            Policies::allow_all()
        }
    };
    AuthPlan {
        tokens,
        oidc,
        policies,
        rate_limits: spec.rate_limits.clone(),
    }
}

/// The minter of `Server.spec.auth.outbound`, if configured.
fn auth_minter(config: &Config, errors: &mut Vec<ConfigError>) -> Option<Arc<Minter>> {
    let outbound = config.server().auth.outbound.as_ref()?;
    match Minter::from_spec(outbound) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            let path = FieldPath::root()
                .key("spec")
                .key("auth")
                .key("outbound")
                .key("signingKeyFile");
            match config.server_id() {
                Some(id) => errors.push(config.error_at(id, path, e)),
                None => tracing::error!(error = %e, "Server.spec.auth.outbound"),
            }
            None
        }
    }
}

/// The credential of a trigger's subscriber.
fn credential(
    config: &Config,
    trigger: &Trigger,
    minter: Option<&Arc<Minter>>,
    errors: &mut Vec<ConfigError>,
) -> Option<Credential> {
    let path = FieldPath::root().key("spec").key("subscriber");
    if let Some(token) = &trigger.subscriber_token {
        return match read_secret(token.file.as_deref(), token.env.as_deref()) {
            Ok(secret) => Some(Credential::Static(secret)),
            Err(e) => {
                errors.push(config.error_at(&trigger.id, path.key("token"), e));
                None
            }
        };
    }
    let audience = trigger.subscriber_audience.as_ref()?;
    match minter {
        Some(minter) => Some(Credential::Minted {
            audience: audience.clone(),
            minter: Arc::clone(minter),
        }),
        None => {
            if config.server().auth.outbound.is_none() {
                errors.push(config.error_at(
                    &trigger.id,
                    path.key("audience"),
                    "minting a token for this audience needs Server.spec.auth.outbound (an issuer and a signing key)",
                ));
            }
            None
        }
    }
}

/// Checks that an in-process destination exists and can run; returns the resource it names.
/// Destinations this build cannot deliver to are rejected, so that a config never loads with
/// a trigger whose events would all fail.
pub(crate) fn check_destination(
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
        "KafkaSink" => Kind::KafkaSink,
        "RocketMQSink" => Kind::RocketMQSink,
        #[cfg(feature = "media")]
        "WorkerPool" => Kind::WorkerPool,
        "Scheduler" if name == "default" => return None,
        "Scheduler" => {
            errors.push(config.error_at(
                id,
                path.key("ref").key("name"),
                "there is one scheduler, named default",
            ));
            return None;
        }
        other => {
            errors.push(config.error_at(
                id,
                path.key("ref"),
                format!("{other} is not available in this build of triggerfish; use a uri, a Service, a Broker, Display, File, Exec, Scheduler, KafkaSink, RocketMQSink or (with the media feature) WorkerPool"),
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
    // Build it once to check it (templates, program, secrets, client settings); the runtime
    // builds its own.
    let mut sink_errors = Vec::new();
    let checked = {
        let mut check = crate::sources::BuildErrors::new(config, resource, &mut sink_errors);
        match &resource.spec {
            CustomSpec::KafkaSink(spec) => {
                crate::sinks::kafka::KafkaSinkConfig::build(spec, resource, &mut check);
            }
            CustomSpec::RocketMQSink(spec) => {
                crate::sinks::rocketmq::RocketMqSinkConfig::build(spec, resource, &mut check);
            }
            _ => {}
        }
        !check.failed()
    };
    if !checked {
        errors.extend(sink_errors);
        return None;
    }
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
