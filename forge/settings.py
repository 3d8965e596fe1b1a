"""Process settings from the environment (the config file says what to serve; these say where)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore")

    data_dir: Path = Field(Path(".forge"), description="Where the SQLite file and models live.")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "FORGE_DATABASE_URL"),
        description="SQLAlchemy async URL; default: a SQLite file under data_dir.",
    )
    master_key: SecretStr | None = Field(
        None, description="Admin key to honour; when unset one is generated on first start."
    )
    encryption_keys: SecretStr | None = Field(
        None,
        description="Keys that seal stored secrets: 'id:base64key,...', newest first "
        "(forge/credentials/sealing.py); default: a key made once under data_dir.",
    )
    config: Path = Field(DEFAULT_CONFIG, description="Platform YAML config.")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'forge.db').resolve()}"
