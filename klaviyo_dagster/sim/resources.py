"""JSON:API resource objects in revision 2026-07-15 shapes, plus filter records for each type.

``*_resource`` functions return ``{"type", "id", "attributes", "relationships", "links"}``;
``*_record`` functions return the flat dict that filters and ``sort`` read (dotted field names as
in ``x-klaviyo-filters``).
"""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.sim.data import Account, Action, Campaign, Flow, Group, Message, Metric, Tag, iso


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
    if message.channel == "email":
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
            "name": message.name,
            "id": message.id,
        }
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
        "name": message.name,
        "id": message.id,
    }


def action_definition(action: Action, timezone: str) -> dict[str, Any]:
    definition: dict[str, Any] = {"id": action.id, "type": action.type, "links": {"next": action.next_id}}
    if action.type == "time-delay":
        definition["data"] = {
            "unit": "days",
            "value": action.delay_days,
            "secondary_value": None,
            "timezone": timezone,
            "delay_until_time": None,
            "delay_until_weekdays": None,
        }
    else:
        assert action.message is not None
        definition["data"] = {"message": message_definition(action.message), "status": action.status}
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
            "triggers": [flow.trigger],
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
    messages = [{"type": "flow-message", "id": action.message.id}] if action.message else []
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
    moment = campaign.send_time or campaign.scheduled_at
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
    moment = campaign.send_time or campaign.scheduled_at
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
    marketing = attrs["subscriptions"]["email"]["marketing"]
    suppression = marketing["suppression"] or []
    return {
        "id": profile_id,
        "email": attrs["email"],
        "phone_number": attrs["phone_number"],
        "external_id": attrs["external_id"],
        "created": attrs["created"],
        "updated": attrs["updated"],
        "subscriptions.email.marketing.suppression.reason": suppression[0]["reason"] if suppression else None,
        "subscriptions.email.marketing.suppression.timestamp": suppression[0]["timestamp"]
        if suppression
        else None,
        "subscriptions.email.marketing.list_suppressions.reason": None,
        "subscriptions.email.marketing.list_suppressions.timestamp": None,
        "subscriptions.email.marketing.list_suppressions.list_id": None,
        "_kx": None,
    }


def profile_resource(
    base: str, profile_id: str, attrs: dict[str, Any], additional: set[str], fields: list[str] | None
) -> dict[str, Any]:
    shown = {k: v for k, v in attrs.items() if k not in ADDITIONAL_PROFILE_FIELDS}
    shown = sparse(shown, fields)
    # Requested additional fields are returned even when a sparse fieldset does not name them.
    for name in ADDITIONAL_PROFILE_FIELDS:
        if name in additional:
            shown[name] = attrs[name]
    rels = {name: _rel(base, "profiles", profile_id, name) for name in ("lists", "segments")}
    return resource(base, "profile", profile_id, shown, rels)
