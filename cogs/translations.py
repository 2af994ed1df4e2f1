"""Command names and descriptions in German and French, through discord.py's `Translator`.

discord.py hands every name, description and choice name of the command tree
to `translate` when it builds the payload for a sync, once per locale; what it
returns becomes Discord's `name_localizations` / `description_localizations`,
so members whose client is set to German or French see the commands in their
language. Option names stay as they are: they are what a member types.

Localised names keep the `imagine` prefix so the commands still sort together
in the picker. The English text is the key; a string missing here simply
stays English (a test checks nothing is missing).
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

GERMAN: dict[str, str] = {
    # names
    "imagine-queue": "imagine-warteschlange",
    "imagine-history": "imagine-verlauf",
    "imagine-admin": "imagine-verwaltung",
    "show": "anzeigen",
    "usage": "nutzung",
    "set": "festlegen",
    "channels": "kanäle",
    "aspect-ratio": "seitenverhältnis",
    "member-jobs": "jobs-pro-mitglied",
    "member-queue": "warteschlange-pro-mitglied",
    "daily-quota": "tageskontingent",
    "server-jobs": "jobs-pro-server",
    "admin-bypass": "admin-ausnahme",
    "reaction-reroll": "reaktion-neu",
    "show-cost": "kosten-anzeigen",
    "banned-words": "verbotene-wörter",
    "models": "modelle",
    "Edit image": "Bild bearbeiten",
    "Which model makes it (default: the server's)": "Welches Modell es erstellt (Standard: das des Servers)",
    "How many images at once, where the model allows (1 to 4)": (
        "Wie viele Bilder auf einmal, wo das Modell es erlaubt (1 bis 4)"
    ),
    "A picture of yours to edit (it goes to an edit model)": (
        "Ein eigenes Bild zum Bearbeiten (es geht an ein Bearbeitungsmodell)"
    ),
    "Choose the models members may use, and the default": "Die Modelle für Mitglieder wählen, und das Standardmodell",
    "Add or remove a model, make one the default, or clear (every model)": (
        "Modell hinzufügen, entfernen, als Standard setzen, oder leeren (alle Modelle)"
    ),
    "The model": "Das Modell",
    "default": "standard",
    # /imagine
    "Create an image from a text prompt": "Erstelle ein Bild aus einer Textbeschreibung",
    "What the image should show (up to 2,048 characters)": "Was das Bild zeigen soll (bis zu 2.048 Zeichen)",
    "The image's shape (default: the server's, normally 1:1 · square)": (
        "Das Format des Bildes (Standard: das des Servers, meist 1:1 · quadratisch)"
    ),
    "A number that makes the image reproducible (random when left out)": (
        "Eine Zahl, mit der sich das Bild wiederholen lässt (zufällig, wenn leer)"
    ),
    "1:1 · square": "1:1 · quadratisch",
    "16:9 · landscape": "16:9 · Querformat",
    "9:16 · portrait": "9:16 · Hochformat",
    "4:3 · classic landscape": "4:3 · klassisches Querformat",
    "3:4 · classic portrait": "3:4 · klassisches Hochformat",
    "3:2 · photo landscape": "3:2 · Foto quer",
    "2:3 · photo portrait": "2:3 · Foto hoch",
    "3:1 · panorama": "3:1 · Panorama",
    "1:3 · tall banner": "1:3 · hohes Banner",
    # member commands
    "Your images in progress here, and the server's queue": "Deine Bilder in Arbeit und die Warteschlange des Servers",
    "Your last 10 images here, with links and seeds": "Deine letzten 10 Bilder hier, mit Links und Seeds",
    # /imagine-admin
    "Set up /imagine for this server (Manage Server)": "/imagine für diesen Server einrichten (Server verwalten)",
    "Change one of this server's /imagine settings": "Eine /imagine-Einstellung dieses Servers ändern",
    "Show this server's /imagine settings": "Die /imagine-Einstellungen dieses Servers anzeigen",
    "Images and spend per day, and the top members": "Bilder und Kosten pro Tag und die aktivsten Mitglieder",
    "How many days back to count (default 7)": "Wie viele Tage zurück (Standard 7)",
    "Allow /imagine only in some channels (none listed: everywhere)": (
        "/imagine nur in bestimmten Kanälen erlauben (keiner gelistet: überall)"
    ),
    "Add or remove a channel, or clear the list": "Kanal hinzufügen oder entfernen, oder die Liste leeren",
    "The channel": "Der Kanal",
    "add": "hinzufügen",
    "remove": "entfernen",
    "clear": "leeren",
    "The aspect ratio /imagine uses when none is picked": "Das Seitenverhältnis, das /imagine ohne Auswahl nutzt",
    "The default shape": "Das Standardformat",
    "How many images one member may have generating at once": (
        "Wie viele Bilder eines Mitglieds gleichzeitig erstellt werden dürfen"
    ),
    "Jobs at once per member; more wait in line (default 3)": (
        "Gleichzeitige Aufträge pro Mitglied; weitere warten (Standard 3)"
    ),
    "How many of one member's images may wait in line": "Wie viele Bilder eines Mitglieds warten dürfen",
    "Jobs waiting per member; past this a new one is refused (default 10)": (
        "Wartende Aufträge pro Mitglied; darüber wird abgelehnt (Standard 10)"
    ),
    "How many images one member may make in any 24 hours": "Wie viele Bilder ein Mitglied in 24 Stunden erstellen darf",
    "Images per member per 24 hours (default 25)": "Bilder pro Mitglied in 24 Stunden (Standard 25)",
    "How many images this server makes at once; more wait in line": (
        "Wie viele Bilder der Server gleichzeitig erstellt; weitere warten"
    ),
    "Jobs at once for the whole server (default 10)": "Gleichzeitige Aufträge für den ganzen Server (Standard 10)",
    "Whether members with Manage Server skip the member limits": (
        "Ob Mitglieder mit „Server verwalten“ die Mitgliedslimits umgehen"
    ),
    "On: Manage Server skips per-member limits (default on)": (
        "An: „Server verwalten“ umgeht die Limits pro Mitglied (Standard an)"
    ),
    "Whether reacting 🔄 to a result makes a new one": "Ob eine 🔄-Reaktion auf ein Ergebnis ein neues erstellt",
    "On: a 🔄 reaction rerolls (default on)": "An: eine 🔄-Reaktion erstellt ein neues Bild (Standard an)",
    "Whether results and details show what the image cost": "Ob Ergebnisse und Details die Kosten des Bildes zeigen",
    "On: results show the cost (default off)": "An: Ergebnisse zeigen die Kosten (Standard aus)",
    "Words or phrases a prompt may not contain": "Wörter oder Sätze, die eine Beschreibung nicht enthalten darf",
    "Add or remove words, or clear the list": "Wörter hinzufügen oder entfernen, oder die Liste leeren",
    "Words or phrases, separated by commas": "Wörter oder Sätze, durch Kommas getrennt",
}

FRENCH: dict[str, str] = {
    # names
    "imagine-queue": "imagine-file",
    "imagine-history": "imagine-historique",
    "imagine-admin": "imagine-gestion",
    "show": "afficher",
    "usage": "utilisation",
    "set": "régler",
    "channels": "salons",
    "aspect-ratio": "format",
    "member-jobs": "travaux-par-membre",
    "member-queue": "file-par-membre",
    "daily-quota": "quota-quotidien",
    "server-jobs": "travaux-du-serveur",
    "admin-bypass": "exemption-admin",
    "reaction-reroll": "relance-par-réaction",
    "show-cost": "afficher-coût",
    "banned-words": "mots-interdits",
    "models": "modèles",
    "Edit image": "Modifier l'image",
    "Which model makes it (default: the server's)": "Quel modèle la crée (par défaut : celui du serveur)",
    "How many images at once, where the model allows (1 to 4)": (
        "Combien d'images à la fois, si le modèle le permet (1 à 4)"
    ),
    "A picture of yours to edit (it goes to an edit model)": (
        "Une image à vous à modifier (elle va à un modèle de retouche)"
    ),
    "Choose the models members may use, and the default": "Choisir les modèles des membres, et celui par défaut",
    "Add or remove a model, make one the default, or clear (every model)": (
        "Ajouter ou retirer un modèle, le mettre par défaut, ou vider (tous les modèles)"
    ),
    "The model": "Le modèle",
    "default": "défaut",
    # /imagine
    "Create an image from a text prompt": "Crée une image à partir d'une description",
    "What the image should show (up to 2,048 characters)": "Ce que l'image doit montrer (jusqu'à 2 048 caractères)",
    "The image's shape (default: the server's, normally 1:1 · square)": (
        "La forme de l'image (par défaut : celle du serveur, en général 1:1 · carré)"
    ),
    "A number that makes the image reproducible (random when left out)": (
        "Un nombre qui rend l'image reproductible (aléatoire s'il est omis)"
    ),
    "1:1 · square": "1:1 · carré",
    "16:9 · landscape": "16:9 · paysage",
    "9:16 · portrait": "9:16 · portrait",
    "4:3 · classic landscape": "4:3 · paysage classique",
    "3:4 · classic portrait": "3:4 · portrait classique",
    "3:2 · photo landscape": "3:2 · photo paysage",
    "2:3 · photo portrait": "2:3 · photo portrait",
    "3:1 · panorama": "3:1 · panorama",
    "1:3 · tall banner": "1:3 · bannière verticale",
    # member commands
    "Your images in progress here, and the server's queue": "Tes images en cours ici, et la file d'attente du serveur",
    "Your last 10 images here, with links and seeds": "Tes 10 dernières images ici, avec liens et graines",
    # /imagine-admin
    "Set up /imagine for this server (Manage Server)": "Configurer /imagine pour ce serveur (Gérer le serveur)",
    "Change one of this server's /imagine settings": "Modifier un réglage /imagine de ce serveur",
    "Show this server's /imagine settings": "Afficher les réglages /imagine de ce serveur",
    "Images and spend per day, and the top members": "Images et dépenses par jour, et les membres les plus actifs",
    "How many days back to count (default 7)": "Combien de jours compter (7 par défaut)",
    "Allow /imagine only in some channels (none listed: everywhere)": (
        "N'autoriser /imagine que dans certains salons (aucun listé : partout)"
    ),
    "Add or remove a channel, or clear the list": "Ajouter ou retirer un salon, ou vider la liste",
    "The channel": "Le salon",
    "add": "ajouter",
    "remove": "retirer",
    "clear": "vider",
    "The aspect ratio /imagine uses when none is picked": "Le format utilisé par /imagine quand aucun n'est choisi",
    "The default shape": "Le format par défaut",
    "How many images one member may have generating at once": (
        "Combien d'images d'un membre peuvent être créées à la fois"
    ),
    "Jobs at once per member; more wait in line (default 3)": (
        "Travaux simultanés par membre ; les autres attendent (3 par défaut)"
    ),
    "How many of one member's images may wait in line": "Combien d'images d'un membre peuvent attendre",
    "Jobs waiting per member; past this a new one is refused (default 10)": (
        "Travaux en attente par membre ; au-delà, refus (10 par défaut)"
    ),
    "How many images one member may make in any 24 hours": "Combien d'images un membre peut créer en 24 heures",
    "Images per member per 24 hours (default 25)": "Images par membre sur 24 heures (25 par défaut)",
    "How many images this server makes at once; more wait in line": (
        "Combien d'images le serveur crée à la fois ; les autres attendent"
    ),
    "Jobs at once for the whole server (default 10)": "Travaux simultanés pour tout le serveur (10 par défaut)",
    "Whether members with Manage Server skip the member limits": (
        "Si les membres avec « Gérer le serveur » ignorent les limites par membre"
    ),
    "On: Manage Server skips per-member limits (default on)": (
        "Activé : « Gérer le serveur » ignore les limites par membre (activé par défaut)"
    ),
    "Whether reacting 🔄 to a result makes a new one": "Si une réaction 🔄 sur un résultat en crée un nouveau",
    "On: a 🔄 reaction rerolls (default on)": "Activé : une réaction 🔄 relance (activé par défaut)",
    "Whether results and details show what the image cost": "Si les résultats et détails affichent le coût de l'image",
    "On: results show the cost (default off)": "Activé : les résultats affichent le coût (désactivé par défaut)",
    "Words or phrases a prompt may not contain": "Mots ou expressions interdits dans une description",
    "Add or remove words, or clear the list": "Ajouter ou retirer des mots, ou vider la liste",
    "Words or phrases, separated by commas": "Mots ou expressions, séparés par des virgules",
}

TABLES: dict[discord.Locale, dict[str, str]] = {discord.Locale.german: GERMAN, discord.Locale.french: FRENCH}


class CommandTranslator(app_commands.Translator):
    """English source strings to German and French; None (keep English) for anything else."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        if context.location is Where.parameter_name:
            return None
        table = TABLES.get(locale)
        return table.get(string.message) if table is not None else None
