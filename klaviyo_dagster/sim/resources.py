"""JSON:API resource objects in revision 2026-07-15 shapes, plus filter records for each type.

``*_resource`` functions return ``{"type", "id", "attributes", "relationships", "links"}``;
``*_record`` functions return the flat dict that filters and ``sort`` read (dotted field names as
in ``x-klaviyo-filters``).
"""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.sim.data import (
    BOOLEAN_SPLITS,
    CHANNEL_SEND_ACTIONS,
    SEND_ACTION_CHANNELS,
    Account,
    Action,
    Branch,
    Campaign,
    Flow,
    Group,
    Message,
    Metric,
    Tag,
    iso,
    profile_sort_value,
)


def sparse(attributes: dict[str, Any], paths: list[str] | None) -> dict[str, Any]:
    """Keep only ``paths`` (dotted, e.g. ``location.city``) of ``attributes``; None keeps everything."""
    if paths is None:
        return attributes
    out: dict[str, Any] = {}
    taken: list[str] = []
    for path in sorted(paths, key=len):
        if path == "id" or any(path.startswith(prefix + ".") for prefix in taken):
            continue
        src: Any = attributes
        dst = out
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(src, dict) or part not in src:
                break
            if depth == len(parts) - 1:
                dst[part] = src[part]
                taken.append(path)
            else:
                src = src[part]
                dst = dst.setdefault(part, {})
    return out


def _rel(
    base: str, kind: str, rid: str, name: str, data: Any = None, include_data: bool = False
) -> dict[str, Any]:
    rel: dict[str, Any] = {
        "links": {
            "self": f"{base}/api/{kind}/{rid}/relationships/{name}/",
            "related": f"{base}/api/{kind}/{rid}/{name}/",
        }
    }
    if include_data:
        rel["data"] = data
    return rel


def resource(
    base: str, kind: str, rid: str, attributes: dict[str, Any], relationships: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": kind, "id": rid, "attributes": attributes}
    if relationships:
        doc["relationships"] = relationships
    doc["links"] = {"self": f"{base}/api/{kind}s/{rid}/"}
    return doc


# --- accounts, metrics, tags, lists, segments ---------------------------------------------------------


def account_resource(base: str, account: Account) -> dict[str, Any]:
    return resource(
        base,
        "account",
        account.id,
        {
            "test_account": False,
            "contact_information": {
                "default_sender_name": account.name,
                "default_sender_email": "hello@example.com",
                "website_url": "https://shop.example.com",
                "organization_name": account.name,
                "street_address": {
                    "address1": "1 Main St",
                    "address2": None,
                    "city": "Boston",
                    "region": "MA",
                    "country": "US",
                    "zip": "02110",
                },
            },
            "industry": "Apparel & Accessories",
            "timezone": account.timezone,
            "preferred_currency": "USD",
            "public_api_key": account.public_api_key,
            "locale": "en-US",
        },
    )


def metric_record(metric: Metric) -> dict[str, Any]:
    return {
        "id": metric.id,
        "name": metric.name,
        "integration.name": metric.integration["name"],
        "integration.category": metric.integration["category"],
        "created": iso(metric.created),
        "updated": iso(metric.updated),
    }


def metric_resource(base: str, metric: Metric) -> dict[str, Any]:
    integration = {"object": "integration", **metric.integration}
    return resource(
        base,
        "metric",
        metric.id,
        {
            "name": metric.name,
            "created": iso(metric.created),
            "updated": iso(metric.updated),
            "integration": integration,
        },
    )


def tag_resource(base: str, tag: Tag) -> dict[str, Any]:
    return resource(base, "tag", tag.id, {"name": tag.name})


def group_resource(base: str, group: Group, profile_count: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"name": group.name, "created": iso(group.created), "updated": iso(group.updated)}
    if group.kind == "list":
        attrs["opt_in_process"] = "single_opt_in"
    else:
        attrs.update(
            definition={"condition_groups": []}, is_active=True, is_processing=False, is_starred=False
        )
    if profile_count:
        attrs["profile_count"] = group.profile_count
    rels = {"tags": _rel(base, f"{group.kind}s", group.id, "tags")}
    return resource(base, group.kind, group.id, attrs, rels)


# --- flows ---------------------------------------------------------------------------------------------


def message_definition(message: Message) -> dict[str, Any]:
    """A flow message's definition in the spec's shape for its channel (FlowEmail, FlowSms,
    FlowPushNotification, FlowWhatsApp, FlowWebhook, FlowInternalAlert)."""
    render = _MESSAGE_DEFINITIONS.get(message.channel, _sms_definition)
    return {**render(message), "name": message.name, "id": message.id}


def _email_definition(message: Message) -> dict[str, Any]:
    return {
        "from_email": "hello@example.com",
        "from_label": "Acme, Inc.",
        "reply_to_email": None,
        "cc_email": None,
        "bcc_email": None,
        "subject_line": message.subject,
        "preview_text": "Don't miss it",
        "template_id": None,
        "smart_sending_enabled": True,
        "transactional": False,
        "add_tracking_params": False,
        "custom_tracking_params": None,
        "additional_filters": None,
    }


def _sms_definition(message: Message) -> dict[str, Any]:
    return {
        "body": f"{message.subject} Reply STOP to opt out.",
        "image_id": None,
        "dynamic_image": None,
        "shorten_links": True,
        "include_contact_card": False,
        "add_org_prefix": True,
        "add_info_link": True,
        "add_opt_out_language": False,
        "smart_sending_enabled": True,
        "sms_quiet_hours_enabled": True,
        "transactional": False,
        "add_tracking_params": False,
        "custom_tracking_params": None,
        "template_id": None,
        "additional_filters": None,
    }


def _push_definition(message: Message) -> dict[str, Any]:
    return {
        "title": message.subject,
        "body": f"{message.subject} Tap to see.",
        "sound": False,
        "badge": False,
        "image_id": None,
        "dynamic_image": None,
        "video_asset_id": None,
        "on_open": "home",
        "ios_link": None,
        "android_link": None,
        "web_url": None,
        "push_type": "standard",
        "kv_pairs": None,
        "conversion_metric_id": None,
        "smart_sending_enabled": True,
        "additional_filters": None,
        "action_buttons": None,
    }


def _whatsapp_definition(message: Message) -> dict[str, Any]:
    return {
        "vendor_id": f"wa-{message.id.lower()}",
        "smart_sending_enabled": True,
        "transactional": False,
        "add_tracking_params": False,
        "additional_filters": None,
    }


def _webhook_definition(message: Message) -> dict[str, Any]:
    return {
        "url": "https://hooks.example.com/klaviyo",
        "headers": {"X-Source": "klaviyo"},
        "body": '{"profile": "{{ person.id }}"}',
    }


def _internal_alert_definition(message: Message) -> dict[str, Any]:
    return {
        "from_email": "alerts@example.com",
        "from_label": "Store alerts",
        "to_emails": ["team@example.com"],
        "subject_line": message.subject,
        "template_id": None,
    }


_MESSAGE_DEFINITIONS = {
    "email": _email_definition,
    "sms": _sms_definition,
    "push-notification": _push_definition,
    "whatsapp": _whatsapp_definition,
    "webhook": _webhook_definition,
    "internal-alert": _internal_alert_definition,
}


def _send_data(message: Message, status: str) -> dict[str, Any]:
    """SendEmailActionData and its siblings: the message and the action's status."""
    return {"message": message_definition(message), "status": status}


def _condition_groups(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"condition_groups": [{"conditions": list(conditions)}]}


def _experiment_data(action: Action) -> dict[str, Any]:
    """AbTestAction.data / ContentExperimentAction.data: main action, current experiment, variations."""
    assert action.message is not None
    params = action.params
    send_type = CHANNEL_SEND_ACTIONS[action.message.channel]
    experiment: dict[str, Any] = {
        "id": params["experiment_id"],
        "name": params["experiment_name"],
        "variations": [{"type": send_type, "data": _send_data(m, action.status)} for m in action.variations],
        "allocations": params["allocations"],
        "started": iso(params["started"]),
        "winner_metric": params["winner_metric"],
    }
    if action.type == "ab-test":
        experiment["automatic_winner_selection_settings"] = {
            "enabled": True,
            "automatic_end_date": None,
            "automatic_end_statistical_certainty": True,
        }
    return {
        "status": action.status,
        "experiment_status": params["experiment_status"],
        "main_action": {"type": send_type, "data": _send_data(action.message, action.status)},
        "current_experiment": experiment,
    }


def _split_data(action: Action) -> dict[str, Any]:
    """ConditionalBranchActionData, TriggerBranchActionData or ActionOutputSplitActionData."""
    params = action.params
    if action.type == "conditional-split":
        condition: dict[str, Any] = (
            {"type": "profile-sample", "percentage": params["sample"]}
            if params.get("sample")
            else {
                "type": "profile-property",
                "property": f"properties['{params['property']}']",
                "filter": {"type": "boolean", "operator": "equals", "value": True},
            }
        )
        return {"profile_filter": _condition_groups(condition)}
    if action.type == "trigger-split":
        return {
            "trigger_filter": None,
            "trigger_id": params["trigger_id"],
            "trigger_type": "metric",
        }
    condition = {
        "type": "action-output",
        "output_config_id": params["output_config_id"],
        "field": "status",
        "filter": {"type": "string", "operator": "equals", "value": params["value"]},
    }
    return {"action_output_filter": _condition_groups(condition)}


def _branch(branch: Branch) -> dict[str, Any]:
    """One MultiBranchSplitBranch."""
    condition = {
        "type": "profile-property",
        "property": "properties['Tier']",
        "filter": {"type": "string", "operator": "equals", "value": branch.value},
    }
    return {
        "branch_id": branch.id,
        "order": branch.order,
        "is_else": branch.is_else,
        "branch_filter": None if branch.is_else else _condition_groups(condition),
        "links": {"next": branch.next_id},
        "name": branch.name,
    }


def _action_data(action: Action, timezone: str) -> dict[str, Any] | None:
    """The ``data`` of an action definition, by type (the spec's *ActionData schemas)."""
    params, kind = action.params, action.type
    if kind in SEND_ACTION_CHANNELS:
        assert action.message is not None
        return _send_data(action.message, action.status)
    if kind in ("ab-test", "content-experiment"):
        return _experiment_data(action)
    if kind in BOOLEAN_SPLITS:
        return _split_data(action)
    if kind == "multi-branch-split":
        return {"branches": [_branch(b) for b in action.branches], "name": params.get("name", "Split")}
    if kind == "time-delay":
        return {
            "unit": params.get("unit", "days"),
            "value": params.get("value", action.delay_days),
            "secondary_value": None,
            "timezone": params.get("timezone", timezone),
            "delay_until_time": params.get("delay_until_time"),
            "delay_until_weekdays": params.get("delay_until_weekdays"),
        }
    if kind == "countdown-delay":
        return {**params, "delay_until_time": None, "delay_until_weekdays": None}
    if kind == "target-date":
        return dict(params)
    if kind == "update-profile":
        operation = {
            "operator": "update",
            "property_type": "string",
            "property_key": params["property_key"],
            "property_value": params["property_value"],
        }
        return {"profile_operations": [operation], "status": action.status}
    if kind == "list-update":
        return {
            "name": "Add to list",
            "on_execution": params["on_execution"],
            "list_id": params["list_id"],
            "status": action.status,
        }
    if kind == "internal-service":
        service = {
            "service_method_type": "track-event",
            "event_key": params["event_key"],
            "event_payload": {},
            "tracking_company_id": None,
        }
        return {"service_configuration": service, "status": action.status}
    return None  # back-in-stock-delay has no data; code's data is opaque (null)


def _action_links(action: Action) -> dict[str, Any] | None:
    """Link, BooleanBranchLinks, or null for a multi-branch split (its branches carry the links)."""
    if action.type in BOOLEAN_SPLITS:
        return {"next_if_true": action.next_if_true, "next_if_false": action.next_if_false}
    if action.type == "multi-branch-split":
        return None
    return {"next": action.next_id}


def action_definition(action: Action, timezone: str) -> dict[str, Any]:
    """One FlowDefinition.actions entry in the shape its ``type`` selects."""
    definition: dict[str, Any] = {"id": action.id, "type": action.type, "links": _action_links(action)}
    data = _action_data(action, timezone)
    if data is not None or action.type == "code":
        definition["data"] = data
    return definition


def flow_record(flow: Flow) -> dict[str, Any]:
    return {
        "id": flow.id,
        "name": flow.name,
        "status": flow.status,
        "archived": flow.archived,
        "trigger_type": flow.trigger_type,
        "created": iso(flow.created),
        "updated": iso(flow.updated),
    }


def flow_resource(
    base: str, flow: Flow, account: Account, included: set[str], definition: bool
) -> dict[str, Any]:
    attrs: dict[str, Any] = {k: v for k, v in flow_record(flow).items() if k != "id"}
    if definition:
        attrs["definition"] = {
            "triggers": [flow.trigger] if flow.trigger else [],
            "profile_filter": None,
            "actions": [action_definition(a, account.timezone) for a in flow.actions],
            "entry_action_id": flow.actions[0].id if flow.actions else None,
        }
    rels = {
        "flow-actions": _rel(
            base,
            "flows",
            flow.id,
            "flow-actions",
            [{"type": "flow-action", "id": a.id} for a in flow.actions],
            "flow-actions" in included,
        ),
        "tags": _rel(
            base,
            "flows",
            flow.id,
            "tags",
            [{"type": "tag", "id": t} for t in flow.tag_ids],
            "tags" in included,
        ),
    }
    return resource(base, "flow", flow.id, attrs, rels)


def action_record(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "action_type": action.type,
        "status": action.status,
        "created": iso(action.created),
        "updated": iso(action.updated),
    }


def action_resource(base: str, action: Action, timezone: str) -> dict[str, Any]:
    attrs = {
        "created": iso(action.created),
        "updated": iso(action.updated),
        "definition": action_definition(action, timezone),
    }
    messages = [{"type": "flow-message", "id": m.id} for m in action.messages]
    rels = {
        "flow": _rel(base, "flow-actions", action.id, "flow", {"type": "flow", "id": action.flow_id}),
        "flow-messages": _rel(base, "flow-actions", action.id, "flow-messages", messages),
    }
    return resource(base, "flow-action", action.id, attrs, rels)


def message_record(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "name": message.name,
        "created": iso(message.created),
        "updated": iso(message.updated),
    }


def message_resource(base: str, message: Message, include_action: bool) -> dict[str, Any]:
    attrs = {
        "channel": message.channel,
        "created": iso(message.created),
        "updated": iso(message.updated),
        "definition": message_definition(message),
    }
    rels = {
        "flow-action": _rel(
            base,
            "flow-messages",
            message.id,
            "flow-action",
            {"type": "flow-action", "id": message.action_id},
            include_action,
        )
    }
    return resource(base, "flow-message", message.id, attrs, rels)


# --- campaigns -------------------------------------------------------------------------------------------


def campaign_record(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "archived": campaign.archived,
        "messages.channel": campaign.channel,
        "created_at": iso(campaign.created),
        "updated_at": iso(campaign.updated),
        "scheduled_at": iso(campaign.scheduled_at) if campaign.scheduled_at else None,
    }


def campaign_resource(base: str, campaign: Campaign, included: set[str]) -> dict[str, Any]:
    moment = campaign.send_time or campaign.planned_send or campaign.scheduled_at
    strategy = (
        {"method": "static", "datetime": iso(moment), "options": {"is_local": False}}
        if moment
        else {"method": "immediate"}
    )
    attrs = {
        "name": campaign.name,
        "status": campaign.status,
        "archived": campaign.archived,
        "audiences": {"included": campaign.included, "excluded": campaign.excluded},
        "send_options": {"use_smart_sending": True},
        "tracking_options": {
            "add_tracking_params": False,
            "custom_tracking_params": None,
            "is_tracking_clicks": True,
            "is_tracking_opens": True,
        },
        "send_strategy": strategy,
        "created_at": iso(campaign.created),
        "scheduled_at": iso(campaign.scheduled_at) if campaign.scheduled_at else None,
        "updated_at": iso(campaign.updated),
        "send_time": iso(campaign.send_time) if campaign.send_time else None,
    }
    rels = {
        "campaign-messages": _rel(
            base,
            "campaigns",
            campaign.id,
            "campaign-messages",
            [{"type": "campaign-message", "id": campaign.message_id}],
            "campaign-messages" in included,
        ),
        "tags": _rel(
            base,
            "campaigns",
            campaign.id,
            "tags",
            [{"type": "tag", "id": t} for t in campaign.tag_ids],
            "tags" in included,
        ),
    }
    return resource(base, "campaign", campaign.id, attrs, rels)


def campaign_message_resource(base: str, campaign: Campaign, include_campaign: bool) -> dict[str, Any]:
    if campaign.channel == "email":
        definition: dict[str, Any] = {
            "channel": "email",
            "label": campaign.message_label,
            "content": {
                "subject": campaign.subject,
                "preview_text": "Limited time",
                "from_email": "hello@example.com",
                "from_label": "Acme, Inc.",
                "reply_to_email": None,
                "cc_email": None,
                "bcc_email": None,
            },
        }
    else:
        definition = {
            "channel": "sms",
            "content": {"body": campaign.subject, "media_url": None},
            "render_options": {
                "shorten_links": True,
                "add_org_prefix": True,
                "add_info_link": True,
                "add_opt_out_language": False,
            },
        }
    moment = campaign.send_time or campaign.planned_send or campaign.scheduled_at
    attrs = {
        "definition": definition,
        "send_times": [{"datetime": iso(moment), "is_local": False}] if moment else [],
        "created_at": iso(campaign.created),
        "updated_at": iso(campaign.updated),
    }
    rels = {
        "campaign": _rel(
            base,
            "campaign-messages",
            campaign.message_id,
            "campaign",
            {"type": "campaign", "id": campaign.id},
            include_campaign,
        )
    }
    return resource(base, "campaign-message", campaign.message_id, attrs, rels)


# --- profiles --------------------------------------------------------------------------------------------

ADDITIONAL_PROFILE_FIELDS = ("subscriptions", "predictive_analytics")


def profile_record(profile_id: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """The get_profiles filter/sort fields of a profile (a profile without subscriptions has none)."""
    record = {
        name: attrs.get(name) for name in ("email", "phone_number", "external_id", "created", "updated")
    }
    for listing in ("suppression", "list_suppressions"):
        for key in ("reason", "timestamp") + (("list_id",) if listing == "list_suppressions" else ()):
            name = f"subscriptions.email.marketing.{listing}.{key}"
            record[name] = profile_sort_value(attrs, name)
    return {"id": profile_id, **record, "_kx": None}


def profile_resource(
    base: str, profile_id: str, attrs: dict[str, Any], additional: set[str], fields: list[str] | None
) -> dict[str, Any]:
    shown = {k: v for k, v in attrs.items() if k not in ADDITIONAL_PROFILE_FIELDS}
    shown = sparse(shown, fields)
    # Requested additional fields are returned even when a sparse fieldset does not name them, and
    # left out when the profile has none (Klaviyo omits them for some profiles).
    for name in ADDITIONAL_PROFILE_FIELDS:
        if name in additional and name in attrs:
            shown[name] = attrs[name]
    rels = {name: _rel(base, "profiles", profile_id, name) for name in ("lists", "segments")}
    return resource(base, "profile", profile_id, shown, rels)
