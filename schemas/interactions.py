"""Community interaction events: published to ``pulse.interactions``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.envelope import EventBase, Identifier, Properties

__all__ = [
    "MemberJoined",
    "MemberLeft",
    "PostCreated",
    "CommentCreated",
    "ReactionAdded",
    "ContentViewed",
    "ContentShared",
    "QuizAnswered",
    "LiveSessionAttended",
    "PointsEarned",
    "PointsRedeemed",
    "ReferralSent",
    "ReferralConverted",
    "ReviewPosted",
    "SurveyAnswered",
    "ConsentChanged",
    "ErasureRequested",
    "INTERACTION_TYPES",
]

ShortText = Field(min_length=1, max_length=64)
Length = Field(default=0, ge=0, le=100_000, description="Length of the text, never the text.")


class MemberJoinedProps(Properties):
    via_referral: bool = False


class MemberJoined(EventBase):
    """A member joined a community."""

    event_type: Literal["member_joined"]
    properties: MemberJoinedProps = MemberJoinedProps()


class MemberLeftProps(Properties):
    reason: Literal["not_relevant", "too_many_messages", "privacy", "other"] | None = None


class MemberLeft(EventBase):
    """A member left a community."""

    event_type: Literal["member_left"]
    properties: MemberLeftProps = MemberLeftProps()


class PostCreatedProps(Properties):
    post_id: Identifier
    topic: str | None = Field(default=None, max_length=64)
    length_chars: int = Length


class PostCreated(EventBase):
    """A member wrote a post."""

    event_type: Literal["post_created"]
    properties: PostCreatedProps


class CommentCreatedProps(Properties):
    post_id: Identifier
    comment_id: Identifier
    length_chars: int = Length


class CommentCreated(EventBase):
    """A member commented on a post."""

    event_type: Literal["comment_created"]
    properties: CommentCreatedProps


class ReactionAddedProps(Properties):
    target_id: Identifier
    reaction: Literal["like", "love", "helpful", "insightful", "celebrate"]


class ReactionAdded(EventBase):
    """A member reacted to a post or comment."""

    event_type: Literal["reaction_added"]
    properties: ReactionAddedProps


class ContentViewedProps(Properties):
    content_id: Identifier
    content_type: Literal["article", "video", "guide", "calculator", "podcast"]
    dwell_seconds: float = Field(default=0.0, ge=0, le=86_400)


class ContentViewed(EventBase):
    """A member viewed a piece of content."""

    event_type: Literal["content_viewed"]
    properties: ContentViewedProps


class ContentSharedProps(Properties):
    content_id: Identifier
    share_channel: Literal["wechat", "whatsapp", "email", "sms", "link", "other"]


class ContentShared(EventBase):
    """A member shared content outside the community (word of mouth)."""

    event_type: Literal["content_shared"]
    properties: ContentSharedProps


class QuizAnsweredProps(Properties):
    quiz_id: Identifier
    questions: int = Field(ge=1, le=200)
    correct: int = Field(ge=0, le=200)

    @model_validator(mode="after")
    def _correct_within_questions(self) -> Self:
        if self.correct > self.questions:
            raise ValueError("correct cannot exceed questions")
        return self


class QuizAnswered(EventBase):
    """A member completed a quiz."""

    event_type: Literal["quiz_answered"]
    properties: QuizAnsweredProps


class LiveSessionAttendedProps(Properties):
    session_id: Identifier
    minutes_attended: float = Field(ge=0, le=1_440)


class LiveSessionAttended(EventBase):
    """A member attended a live session."""

    event_type: Literal["live_session_attended"]
    properties: LiveSessionAttendedProps


class PointsEarnedProps(Properties):
    points: int = Field(gt=0, le=1_000_000)
    reason: str = ShortText


class PointsEarned(EventBase):
    """A member earned incentive points."""

    event_type: Literal["points_earned"]
    properties: PointsEarnedProps


class PointsRedeemedProps(Properties):
    points: int = Field(gt=0, le=1_000_000)
    reward: str = ShortText


class PointsRedeemed(EventBase):
    """A member redeemed points for a reward."""

    event_type: Literal["points_redeemed"]
    properties: PointsRedeemedProps


class ReferralSentProps(Properties):
    referral_id: Identifier


class ReferralSent(EventBase):
    """A member invited someone."""

    event_type: Literal["referral_sent"]
    properties: ReferralSentProps


class ReferralConvertedProps(Properties):
    referral_id: Identifier


class ReferralConverted(EventBase):
    """Someone a member invited joined or bought."""

    event_type: Literal["referral_converted"]
    properties: ReferralConvertedProps


class ReviewPostedProps(Properties):
    rating: int = Field(ge=1, le=5)
    subject: Literal["product", "claim_service", "agent", "community"]
    length_chars: int = Length


class ReviewPosted(EventBase):
    """A member reviewed a product, a claim's handling, an agent or the community."""

    event_type: Literal["review_posted"]
    properties: ReviewPostedProps


class SurveyAnsweredProps(Properties):
    nps: int | None = Field(default=None, ge=0, le=10, description="Net Promoter answer 0-10")
    csat: int | None = Field(default=None, ge=1, le=5, description="Satisfaction 1-5")

    @model_validator(mode="after")
    def _one_answer(self) -> Self:
        if self.nps is None and self.csat is None:
            raise ValueError("a survey answer needs nps or csat")
        return self


class SurveyAnswered(EventBase):
    """A member answered an NPS or CSAT survey."""

    event_type: Literal["survey_answered"]
    properties: SurveyAnsweredProps


class ConsentChangedProps(Properties):
    marketing: bool
    analytics: bool = True


class ConsentChanged(EventBase):
    """A member changed their consent to marketing or analytics."""

    event_type: Literal["consent_changed"]
    properties: ConsentChangedProps


class ErasureRequestedProps(Properties):
    request_id: Identifier | None = None


class ErasureRequested(EventBase):
    """A member asked for their personal data to be erased."""

    event_type: Literal["erasure_requested"]
    properties: ErasureRequestedProps = ErasureRequestedProps()


INTERACTION_TYPES: tuple[type[EventBase], ...] = (
    MemberJoined,
    MemberLeft,
    PostCreated,
    CommentCreated,
    ReactionAdded,
    ContentViewed,
    ContentShared,
    QuizAnswered,
    LiveSessionAttended,
    PointsEarned,
    PointsRedeemed,
    ReferralSent,
    ReferralConverted,
    ReviewPosted,
    SurveyAnswered,
    ConsentChanged,
    ErasureRequested,
)
