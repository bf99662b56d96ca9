cwlVersion: v1.2
$namespaces:
  s: https://schema.org/
s:softwareVersion: 0.1.0
s:license: https://spdx.org/licenses/Apache-2.0
s:author:
  - class: s:Person
    s:name: twinprov example
$graph:
  # An OGC EO Application Package: a Workflow `#main` and the CommandLineTools it runs, each with
  # its container image. Input: a STAC catalog (a Directory), such as the one the drought demo
  # publishes (TWINPROV_HOME/stac); output: a STAC catalog (a Directory) of the hazard maps.
  - class: Workflow
    id: main
    label: Drought hazard catalog
    doc: >-
      Selects the drought-hazard items of a STAC catalog and publishes them as a new STAC
      catalog with one summary item.
    requirements:
      ResourceRequirement: {coresMin: 1, ramMin: 256}
    inputs:
      stac_catalog:
        type: Directory
        label: STAC catalog
        doc: a STAC catalog folder (catalog.json and its items), e.g. the drought demo's
      keyword:
        type: string
        default: hazard
        label: which items
        doc: items whose id contains this text are kept
    outputs:
      hazard_catalog:
        type: Directory
        outputSource: publish/catalog
    steps:
      select:
        run: '#stac-select'
        in:
          catalog: stac_catalog
          keyword: keyword
        out: [items]
      publish:
        run: '#stac-publish'
        in:
          items: select/items
        out: [catalog]

  - class: CommandLineTool
    id: stac-select
    label: Select STAC items
    requirements:
      DockerRequirement: {dockerPull: docker.io/library/python:3.12-slim}
      InitialWorkDirRequirement:
        listing:
          - entryname: select.py
            entry: |
              import json, pathlib, sys
              root, keyword = pathlib.Path(sys.argv[1]), sys.argv[2]
              items = []
              for p in sorted(root.rglob("*.json")):
                  doc = json.loads(p.read_text())
                  if doc.get("type") != "Feature" or keyword not in doc.get("id", ""):
                      continue
                  assets = {
                      k: {"href": str((p.parent / a["href"]).resolve()) if "://" not in a["href"] else a["href"],
                          "type": a.get("type"), "checksum": a.get("file:checksum")}
                      for k, a in doc.get("assets", {}).items()
                  }
                  items.append({"id": doc["id"], "datetime": doc["properties"].get("datetime"),
                                "bbox": doc.get("bbox"), "geometry": doc.get("geometry"),
                                "assets": assets})
              json.dump({"items": items}, open("items.json", "w"), indent=2)
              print(f"{len(items)} item(s) selected")
    baseCommand: [python3, select.py]
    inputs:
      catalog:
        type: Directory
        inputBinding: {position: 1}
      keyword:
        type: string
        inputBinding: {position: 2}
    outputs:
      items:
        type: File
        format: https://www.iana.org/assignments/media-types/application/json
        outputBinding: {glob: items.json}

  - class: CommandLineTool
    id: stac-publish
    label: Publish a STAC catalog
    requirements:
      DockerRequirement: {dockerPull: docker.io/library/python:3.12-slim}
      InitialWorkDirRequirement:
        listing:
          - entryname: publish.py
            entry: |
              import json, pathlib, sys
              items = json.load(open(sys.argv[1]))["items"]
              out = pathlib.Path("hazard-catalog")
              out.mkdir()
              links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
              for it in items:
                  d = out / it["id"]
                  d.mkdir()
                  item = {"type": "Feature", "stac_version": "1.0.0", "id": it["id"],
                          "geometry": it["geometry"], "bbox": it["bbox"],
                          "properties": {"datetime": it["datetime"]},
                          "assets": {k: {kk: vv for kk, vv in a.items() if vv}
                                     for k, a in it["assets"].items()},
                          "links": [{"rel": "root", "href": "../catalog.json"},
                                    {"rel": "parent", "href": "../catalog.json"}]}
                  (d / f"{it['id']}.json").write_text(json.dumps(item, indent=2))
                  links.append({"rel": "item", "href": f"./{it['id']}/{it['id']}.json",
                                "type": "application/geo+json"})
              catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "drought-hazard",
                         "description": f"{len(items)} drought-hazard item(s)", "links": links}
              (out / "catalog.json").write_text(json.dumps(catalog, indent=2))
    baseCommand: [python3, publish.py]
    inputs:
      items:
        type: File
        inputBinding: {position: 1}
    outputs:
      catalog:
        type: Directory
        outputBinding: {glob: hazard-catalog}
