"""Mail to people (verification and reset links). The embedded default writes each mail
as an ``.eml`` file to a folder (a development mailbox, as Django's file backend does);
production sends through SMTP. Mails hold single-use links: they are never logged."""

from __future__ import annotations

import asyncio
import os
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit


class Mailer(Protocol):
    async def send(self, to: str, subject: str, text: str) -> None: ...


def message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, subject
    mail.set_content(text)
    return mail


class FolderMailer:
    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = folder
        self.sender = sender

    async def send(self, to: str, subject: str, text: str) -> None:
        mail = message(self.sender, to, subject, text)
        await asyncio.to_thread(self._write, mail)

    def _write(self, mail: EmailMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{uuid.uuid4().hex}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(mail))


class SmtpMailer:
    """``smtp://host:port`` (STARTTLS when offered) or ``smtps://``; the login from
    ``FORGE_SMTP_USER`` and ``FORGE_SMTP_PASSWORD``."""

    def __init__(self, url: str, sender: str) -> None:
        self.url = urlsplit(url)
        self.sender = sender

    async def send(self, to: str, subject: str, text: str) -> None:
        await asyncio.to_thread(self._send, message(self.sender, to, subject, text))

    def _send(self, mail: EmailMessage) -> None:
        host, secure = self.url.hostname or "localhost", self.url.scheme == "smtps"
        port = self.url.port or (465 if secure else 25)
        smtp = smtplib.SMTP_SSL(host, port) if secure else smtplib.SMTP(host, port)
        with smtp:
            if not secure and smtp.has_extn("starttls"):
                smtp.starttls()
            user = os.environ.get("FORGE_SMTP_USER")
            if user:
                smtp.login(user, os.environ.get("FORGE_SMTP_PASSWORD", ""))
            smtp.send_message(mail)


def mailer_for(mail_dir: str | None, smtp_url: str | None, sender: str, data_dir: Path) -> Mailer:
    """SMTP when configured, else the mail folder (default ``data_dir/mail``)."""
    if smtp_url:
        return SmtpMailer(smtp_url, sender)
    return FolderMailer(Path(mail_dir) if mail_dir else data_dir / "mail", sender)
