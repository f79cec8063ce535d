"""Purchase and policy events: published to ``pulse.purchases``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import Currency, EventBase, Identifier, ProductLine, Properties

__all__ = [
    "QuoteRequested",
    "ApplicationStarted",
    "PolicyPurchased",
    "PolicyRenewed",
    "PolicyCancelled",
    "PolicyLapsed",
    "ClaimFiled",
    "ClaimSettled",
    "PURCHASE_TYPES",
]

Money = Field(ge=0, le=100_000_000)


class QuoteRequestedProps(Properties):
    quote_id: Identifier
    product_line: ProductLine
    estimated_premium: float | None = Field(default=None, ge=0, le=100_000_000)
    currency: Currency = "CNY"


class QuoteRequested(EventBase):
    """A member asked for a quote (intent)."""

    event_type: Literal["quote_requested"]
    properties: QuoteRequestedProps


class ApplicationStartedProps(Properties):
    application_id: Identifier
    product_line: ProductLine


class ApplicationStarted(EventBase):
    """A member started an application (decision)."""

    event_type: Literal["application_started"]
    properties: ApplicationStartedProps


class PolicyPurchasedProps(Properties):
    policy_id: Identifier
    product_line: ProductLine
    premium: float = Field(gt=0, le=100_000_000, description="Annual premium")
    currency: Currency
    term_months: int = Field(default=12, ge=1, le=600)


class PolicyPurchased(EventBase):
    """A member bought a policy."""

    event_type: Literal["policy_purchased"]
    properties: PolicyPurchasedProps


class PolicyRenewedProps(Properties):
    policy_id: Identifier
    product_line: ProductLine
    premium: float = Field(gt=0, le=100_000_000, description="Annual premium")
    currency: Currency
    term_months: int = Field(default=12, ge=1, le=600)


class PolicyRenewed(EventBase):
    """A member renewed a policy."""

    event_type: Literal["policy_renewed"]
    properties: PolicyRenewedProps


class PolicyCancelledProps(Properties):
    policy_id: Identifier
    product_line: ProductLine
    reason: Literal["price", "service", "switched_provider", "no_longer_needed", "other"] | None = (
        None
    )


class PolicyCancelled(EventBase):
    """A member cancelled a policy (a churn label)."""

    event_type: Literal["policy_cancelled"]
    properties: PolicyCancelledProps


class PolicyLapsedProps(Properties):
    policy_id: Identifier
    product_line: ProductLine


class PolicyLapsed(EventBase):
    """A policy lapsed for non-payment or non-renewal (a churn label)."""

    event_type: Literal["policy_lapsed"]
    properties: PolicyLapsedProps


class ClaimFiledProps(Properties):
    claim_id: Identifier
    policy_id: Identifier
    product_line: ProductLine
    amount: float = Money
    currency: Currency


class ClaimFiled(EventBase):
    """A member filed a claim."""

    event_type: Literal["claim_filed"]
    properties: ClaimFiledProps


class ClaimSettledProps(Properties):
    claim_id: Identifier
    policy_id: Identifier
    product_line: ProductLine
    amount_paid: float = Money
    currency: Currency
    outcome: Literal["paid", "partially_paid", "denied"]
    days_to_settle: int | None = Field(default=None, ge=0, le=3_650)


class ClaimSettled(EventBase):
    """A claim was settled; ``outcome`` is the member's claim experience."""

    event_type: Literal["claim_settled"]
    properties: ClaimSettledProps


PURCHASE_TYPES: tuple[type[EventBase], ...] = (
    QuoteRequested,
    ApplicationStarted,
    PolicyPurchased,
    PolicyRenewed,
    PolicyCancelled,
    PolicyLapsed,
    ClaimFiled,
    ClaimSettled,
)
