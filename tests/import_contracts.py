"""An import-linter contract type that import-linter lacks: apps meet only at their public modules.

Registered in pyproject.toml ([tool.importlinter] contract_types); `lint-imports` runs it.
"""

from importlinter import Contract, ContractCheck, fields, output
from importlinter.application import contract_utils


class PublicModulesContract(Contract):
    """Code outside an app imports only the app's public modules (and what is inside them).

    Options: `apps`, the apps whose insides are guarded; `public`, the module names every
    app offers to the others (e.g. models, services, selectors); `importers`, the packages whose
    imports are checked (the project's wiring, taskflow_site, may import anything); `exempt`,
    package names whose modules import freely (tests exercise whole flows); `ignore_imports`.
    """

    type_name = "public_modules"

    apps = fields.ListField(subfield=fields.StringField())
    public = fields.ListField(subfield=fields.StringField())
    importers = fields.ListField(subfield=fields.StringField())
    exempt = fields.ListField(subfield=fields.StringField(), required=False)
    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)
    unmatched_ignore_imports_alerting = fields.EnumField(
        contract_utils.AlertLevel, default=contract_utils.AlertLevel.ERROR
    )

    def check(self, graph, verbose: bool) -> ContractCheck:
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,
            unmatched_alerting=self.unmatched_ignore_imports_alerting,
        )
        exempt = set(self.exempt or ())
        broken = []
        for app in self.apps:
            public = tuple(f"{app}.{name}" for name in self.public)
            for module in sorted(graph.find_descendants(app)):
                if any(module == name or module.startswith(f"{name}.") for name in public):
                    continue
                for importer in sorted(graph.find_modules_that_directly_import(module)):
                    if importer == app or importer.startswith(f"{app}."):
                        continue
                    if not any(importer == root or importer.startswith(f"{root}.") for root in self.importers):
                        continue
                    if exempt & set(importer.split(".")):
                        continue
                    lines = [
                        detail["line_number"] for detail in graph.get_import_details(importer=importer, imported=module)
                    ]
                    broken.append((importer, module, lines))
        return ContractCheck(
            kept=not broken,
            warnings=list(removal.warnings),
            ignored_import_count=removal.ignored_import_count,
            metadata={"broken": broken},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print(f"Apps import each other's {', '.join(self.public)} only:")
        output.new_line()
        for importer, imported, lines in check.metadata["broken"]:
            where = ", ".join(f"l.{line}" for line in lines)
            output.print_error(f"- {importer} -> {imported} ({where})", bold=False)
        output.new_line()
