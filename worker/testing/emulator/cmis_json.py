"""Renders emulator objects in the CMIS 1.1 browser binding JSON (succinct and full) and DMS admin JSON."""

from __future__ import annotations

from typing import Any

from worker.testing.emulator.store import Repository, Version, VersionSeries

_PROPERTY_TYPES = {
    "cmis:objectId": "id",
    "cmis:baseTypeId": "id",
    "cmis:objectTypeId": "id",
    "cmis:versionSeriesId": "id",
    "cmis:versionSeriesCheckedOutId": "id",
    "cmis:contentStreamId": "id",
    "cmis:parentId": "id",
    "sap:parentIds": "id",
    "cmis:creationDate": "datetime",
    "cmis:lastModificationDate": "datetime",
    "cmis:contentStreamLength": "integer",
    "cmis:isImmutable": "boolean",
    "cmis:isLatestVersion": "boolean",
    "cmis:isMajorVersion": "boolean",
    "cmis:isLatestMajorVersion": "boolean",
    "cmis:isPrivateWorkingCopy": "boolean",
    "cmis:isVersionSeriesCheckedOut": "boolean",
}

DOCUMENT_ACTIONS = (
    "canDeleteObject",
    "canUpdateProperties",
    "canGetProperties",
    "canGetObjectParents",
    "canMoveObject",
    "canGetContentStream",
    "canGetAllVersions",
    "canGetObjectRelationships",
    "canGetACL",
)


def document_properties(repo: Repository, series: VersionSeries, version: Version) -> dict[str, Any]:
    latest = series.latest if series.versions else None
    latest_major = next((v for v in reversed(series.versions) if v.is_major), None)
    return {
        "cmis:objectId": version.object_id,
        "cmis:baseTypeId": "cmis:document",
        "cmis:objectTypeId": "cmis:document",
        "cmis:name": series.name,
        "cmis:description": version.description,
        "cmis:createdBy": "anonymous",
        "cmis:creationDate": version.created_ms,
        "cmis:lastModifiedBy": "anonymous",
        "cmis:lastModificationDate": version.created_ms,
        "cmis:changeToken": str(version.created_ms),
        "cmis:isImmutable": False,
        "cmis:isPrivateWorkingCopy": version.is_pwc,
        "cmis:isLatestVersion": version is latest,
        "cmis:isMajorVersion": version.is_major and not version.is_pwc,
        "cmis:isLatestMajorVersion": version is latest_major,
        "cmis:versionLabel": version.label,
        "cmis:versionSeriesId": series.series_id,
        "cmis:isVersionSeriesCheckedOut": series.pwc is not None,
        "cmis:versionSeriesCheckedOutBy": series.checked_out_by,
        "cmis:versionSeriesCheckedOutId": series.pwc.object_id if series.pwc else None,
        "cmis:checkinComment": version.comment,
        "cmis:contentStreamLength": version.length,
        "cmis:contentStreamMimeType": version.mime_type,
        "cmis:contentStreamFileName": version.file_name,
        "cmis:contentStreamId": version.content_id,
        "sap:parentIds": [repo.root_folder_id],
    }


def root_folder_properties(repo: Repository) -> dict[str, Any]:
    return {
        "cmis:objectId": repo.root_folder_id,
        "cmis:baseTypeId": "cmis:folder",
        "cmis:objectTypeId": "cmis:folder",
        "cmis:name": "ROOT",
        "cmis:path": "/",
        "cmis:parentId": None,
        "cmis:createdBy": "anonymous",
        "cmis:creationDate": repo.created_ms,
        "cmis:lastModificationDate": repo.created_ms,
    }


def render_object(properties: dict[str, Any], succinct: bool, with_actions: bool) -> dict[str, Any]:
    body: dict[str, Any]
    if succinct:
        body = {"succinctProperties": properties}
    else:
        body = {
            "properties": {
                key: {
                    "id": key,
                    "localName": key.split(":", 1)[-1],
                    "displayName": key,
                    "queryName": key,
                    "type": _PROPERTY_TYPES.get(key, "string"),
                    "cardinality": "multi" if isinstance(value, list) else "single",
                    "value": value,
                }
                for key, value in properties.items()
            }
        }
    if with_actions:
        is_document = properties.get("cmis:baseTypeId") == "cmis:document"
        body["allowableActions"] = {action: True for action in DOCUMENT_ACTIONS}
        body["allowableActions"].update(
            canCheckOut=is_document and not properties.get("cmis:isVersionSeriesCheckedOut"),
            canCheckIn=bool(properties.get("cmis:isPrivateWorkingCopy")),
            canCancelCheckOut=bool(properties.get("cmis:isPrivateWorkingCopy")),
            canCreateDocument=not is_document,
            canGetChildren=not is_document,
            canGetContentStream=is_document,
        )
    return body


def select_properties(properties: dict[str, Any], selected: list[str] | None) -> dict[str, Any]:
    if selected is None:
        return properties
    return {k: v for k, v in properties.items() if k in selected}


def repository_info(repo: Repository, base_url: str) -> dict[str, Any]:
    versioned = repo.versioned
    return {
        "repositoryId": repo.id,
        "repositoryName": repo.name,
        "repositoryDescription": repo.description,
        "vendorName": "SAP AG",
        "productName": "SAP Document Management Service",
        "productVersion": "1.0 (emulator)",
        "rootFolderId": repo.root_folder_id,
        "cmisVersionSupported": "1.1",
        "repositoryUrl": f"{base_url}browser/{repo.id}",
        "rootFolderUrl": f"{base_url}browser/{repo.id}/root",
        "latestChangeLogToken": str(repo.created_ms),
        "changesIncomplete": True,
        "changesOnType": [],
        "principalIdAnonymous": "anonymous",
        "principalIdAnyone": "{sap:builtin}everyone",
        "capabilities": {
            "capabilityContentStreamUpdatability": "pwconly" if versioned else "anytime",
            "capabilityPWCUpdatable": True,
            "capabilityPWCSearchable": False,
            "capabilityAllVersionsSearchable": False,
            "capabilityQuery": "metadataonly",
            "capabilityJoin": "none",
            "capabilityOrderBy": "custom",
            "capabilityACL": "manage",
            "capabilityMultifiling": False,
            "capabilityUnfiling": False,
            "capabilityVersionSpecificFiling": False,
            "capabilityChanges": "objectidsonly",
            "capabilityGetDescendants": True,
            "capabilityGetFolderTree": True,
            "capabilityRenditions": "none",
        },
        "extendedFeatures": [],
    }


def admin_repository(repo: Repository) -> dict[str, Any]:
    params = [
        {"paramName": name, "paramValue": value}
        for name, value in repo.params.items()
        if name not in {"repositoryType", "repositoryCategory"}
    ]
    created = _iso(repo.created_ms)
    return {
        "id": repo.id,
        "cmisRepositoryId": repo.cmis_repository_id,
        "name": repo.name,
        "description": repo.description,
        "externalId": repo.external_id,
        "createdTime": created,
        "lastUpdatedTime": created,
        "repositoryCategory": repo.params.get("repositoryCategory", "Instant"),
        "repositoryParams": params,
        "repositorySubType": "SAP Document Management",
        "repositoryType": repo.params.get("repositoryType", "internal"),
    }


def admin_repo_and_connection(repo: Repository) -> dict[str, Any]:
    return {
        "connection": {"type": "ecmdocumentservice", "repositoryId": repo.id},
        "repository": admin_repository(repo),
    }


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
